-- API keys that stop working at a set time (NULL: never), and rate-limit budgets shared
-- by every server process on this database (RATE_LIMIT_BACKEND=postgres).
ALTER TABLE api_keys ADD COLUMN expires_at TIMESTAMPTZ;

-- One row per budget identity (docs/RATE_LIMITS.md), named by the SHA-256 hex of the
-- identity so that no tenant id or credential digest is stored in the clear here. A row
-- whose window has ended is dead: the next take resets it, and a full table purges it.
CREATE TABLE rate_limit_budgets (
    key_hash       TEXT        PRIMARY KEY
                               CHECK (length(key_hash) = 64 AND key_hash ~ '^[0-9a-f]+$'),
    used           BIGINT      NOT NULL DEFAULT 0 CHECK (used >= 0),
    -- NULL only for a row written before its limit was known; the first take learns it.
    limit_count    BIGINT      CHECK (limit_count IS NULL OR limit_count > 0),
    window_seconds BIGINT      NOT NULL CHECK (window_seconds > 0),
    expires_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX rate_limit_budgets_expires_at ON rate_limit_budgets (expires_at);

-- Take one unit of a budget, atomically across processes. Existing rows are locked FOR
-- UPDATE; a new key is created under one advisory lock, so that the capacity check and
-- the insert cannot interleave and the table never grows past p_capacity. Live budgets
-- are never evicted: when the table is still full after purging ended windows, the take
-- is refused (the caller sees 429) rather than forgetting what another caller has used.
-- A live window with another limit or length is a configuration that differs between
-- processes: refused loudly (SQLSTATE 22023) rather than letting each process count
-- against its own idea of the budget. The time is the database's, read once, so every
-- process agrees on when a window ends whatever its own clock says.
CREATE FUNCTION take_rate_budget(
    p_key TEXT,
    p_limit BIGINT,
    p_window BIGINT,
    p_capacity BIGINT,
    OUT admitted BOOLEAN,
    OUT reset_in_ms BIGINT
) LANGUAGE plpgsql AS $fn$
DECLARE
    v_now TIMESTAMPTZ := clock_timestamp();
    v_used BIGINT;
    v_limit BIGINT;
    v_window BIGINT;
    v_expires TIMESTAMPTZ;
    v_count BIGINT;
BEGIN
    IF p_key IS NULL OR length(p_key) <> 64 OR p_limit IS NULL OR p_limit <= 0
       OR p_window IS NULL OR p_window <= 0 OR p_capacity IS NULL OR p_capacity <= 0 THEN
        RAISE EXCEPTION 'take_rate_budget: invalid arguments' USING ERRCODE = '22023';
    END IF;
    LOOP
        SELECT b.used, b.limit_count, b.window_seconds, b.expires_at
          INTO v_used, v_limit, v_window, v_expires
          FROM rate_limit_budgets b WHERE b.key_hash = p_key FOR UPDATE;
        IF FOUND THEN
            IF v_expires <= v_now THEN
                UPDATE rate_limit_budgets
                   SET used = 1, limit_count = p_limit, window_seconds = p_window,
                       expires_at = v_now + make_interval(secs => p_window)
                 WHERE key_hash = p_key;
                admitted := TRUE;
                reset_in_ms := p_window * 1000;
                RETURN;
            END IF;
            IF v_window <> p_window OR (v_limit IS NOT NULL AND v_limit <> p_limit) THEN
                RAISE EXCEPTION 'inconsistent rate limit across server processes'
                    USING ERRCODE = '22023',
                          DETAIL = format('stored limit %s per %s s, asked %s per %s s',
                                          v_limit, v_window, p_limit, p_window);
            END IF;
            reset_in_ms := ceil(extract(epoch FROM v_expires - v_now) * 1000)::BIGINT;
            IF v_used >= p_limit THEN
                admitted := FALSE;
                RETURN;
            END IF;
            UPDATE rate_limit_budgets SET used = v_used + 1, limit_count = p_limit
             WHERE key_hash = p_key;
            admitted := TRUE;
            RETURN;
        END IF;
        PERFORM pg_advisory_xact_lock(6004514665705169236);
        -- Another process may have created it while this one waited for the lock.
        IF NOT EXISTS (SELECT 1 FROM rate_limit_budgets b WHERE b.key_hash = p_key) THEN
            SELECT count(*) INTO v_count FROM rate_limit_budgets;
            IF v_count >= p_capacity THEN
                DELETE FROM rate_limit_budgets WHERE expires_at <= v_now;
                SELECT count(*) INTO v_count FROM rate_limit_budgets;
                IF v_count >= p_capacity THEN
                    admitted := FALSE;
                    SELECT ceil(extract(epoch FROM min(b.expires_at) - v_now) * 1000)::BIGINT
                      INTO reset_in_ms FROM rate_limit_budgets b;
                    RETURN;
                END IF;
            END IF;
            INSERT INTO rate_limit_budgets (key_hash, used, limit_count, window_seconds, expires_at)
            VALUES (p_key, 0, p_limit, p_window, v_now + make_interval(secs => p_window))
            ON CONFLICT (key_hash) DO NOTHING;
        END IF;
    END LOOP;
END
$fn$;
