DROP TABLE rate_limit_budgets;
ALTER TABLE api_keys DROP COLUMN expires_at;
