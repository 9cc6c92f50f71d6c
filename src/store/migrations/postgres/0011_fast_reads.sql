-- What the read cache is validated against (src/store/read_cache.rs,
-- src/store/generations.rs): two counters bumped in the transaction of every write to
-- what the cache keeps, by statement-level triggers, so a bulk write bumps once. (Not
-- the tokens' UPDATE trigger, which names its columns and so cannot see its rows.) A read
-- of this row that begins after a request arrived sees every commit that finished
-- before, on any replica. Writers are serialised (store::locks): the row is no hot spot.
CREATE TABLE cache_generations (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    tokens BIGINT NOT NULL,
    data   BIGINT NOT NULL
);

INSERT INTO cache_generations (id, tokens, data) VALUES (1, 0, 0);

-- Bumps the counter its trigger names (tokens or data) unconditionally.
CREATE FUNCTION cache_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('UPDATE cache_generations SET %I = %I + 1 WHERE id = 1', TG_ARGV[0], TG_ARGV[0]);
    RETURN NULL;
END
$$;

-- Only when rows changed: a statement that matched nothing (an insert refused by
-- ON CONFLICT, a delete of what is already gone) leaves the cache valid.
CREATE FUNCTION cache_data_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM changed) THEN
        UPDATE cache_generations SET data = data + 1 WHERE id = 1;
    END IF;
    RETURN NULL;
END
$$;

-- last_used is left out: it changes once a minute per token and no check reads it.
CREATE TRIGGER scim_tokens_generation
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, scope, idp, hash, revoked, created
    ON scim_tokens FOR EACH STATEMENT EXECUTE FUNCTION cache_generation_bump('tokens');

-- The same four triggers on each table the data section is read from.
DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'teams', 'memberships'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS changed '
            'FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed()', t || '_generation_insert', t);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING NEW TABLE AS changed '
            'FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed()', t || '_generation_update', t);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS changed '
            'FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed()', t || '_generation_delete', t);
        EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION cache_generation_bump(''data'')', t || '_generation_truncate', t);
    END LOOP;
END
$$;
