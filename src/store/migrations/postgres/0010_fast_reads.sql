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

CREATE FUNCTION cache_tokens_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cache_generations SET tokens = tokens + 1 WHERE id = 1;
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

CREATE FUNCTION cache_data_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cache_generations SET data = data + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

-- last_used is left out: it changes once a minute per token and no check reads it.
CREATE TRIGGER scim_tokens_generation
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, scope, idp, hash, revoked, created
    ON scim_tokens FOR EACH STATEMENT EXECUTE FUNCTION cache_tokens_changed();
CREATE TRIGGER users_generation_insert AFTER INSERT ON users REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed();
CREATE TRIGGER users_generation_update AFTER UPDATE ON users REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed();
CREATE TRIGGER users_generation_delete AFTER DELETE ON users REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed();
CREATE TRIGGER users_generation_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_truncated();
CREATE TRIGGER teams_generation_insert AFTER INSERT ON teams REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed();
CREATE TRIGGER teams_generation_update AFTER UPDATE ON teams REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed();
CREATE TRIGGER teams_generation_delete AFTER DELETE ON teams REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed();
CREATE TRIGGER teams_generation_truncate AFTER TRUNCATE ON teams
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_truncated();
CREATE TRIGGER memberships_generation_insert AFTER INSERT ON memberships REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed();
CREATE TRIGGER memberships_generation_update AFTER UPDATE ON memberships REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed();
CREATE TRIGGER memberships_generation_delete AFTER DELETE ON memberships REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_changed();
CREATE TRIGGER memberships_generation_truncate AFTER TRUNCATE ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION cache_data_truncated();
