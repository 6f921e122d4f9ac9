DROP TABLE sequencer_meta;
DROP TABLE audit_log;
DROP TABLE api_keys;
DROP TABLE agent_signing_keys;
