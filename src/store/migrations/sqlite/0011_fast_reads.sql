-- What the read cache is validated against (src/store/read_cache.rs). On SQLite the
-- wal-index header says whether anything was committed; this row says whether a commit
-- changed what a token check reads, so that a commit of ours that did not keeps the
-- cached token checks. `data` is PostgreSQL's (see its migration); SQLite leaves it at 0.
CREATE TABLE cache_generations (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    tokens INTEGER NOT NULL,
    data   INTEGER NOT NULL
);

INSERT INTO cache_generations (id, tokens, data) VALUES (1, 0, 0);

-- last_used is left out: it changes once a minute per token and no check reads it.
CREATE TRIGGER scim_tokens_generation_insert AFTER INSERT ON scim_tokens
BEGIN
    UPDATE cache_generations SET tokens = tokens + 1 WHERE id = 1;
END;
CREATE TRIGGER scim_tokens_generation_delete AFTER DELETE ON scim_tokens
BEGIN
    UPDATE cache_generations SET tokens = tokens + 1 WHERE id = 1;
END;
CREATE TRIGGER scim_tokens_generation_update
    AFTER UPDATE OF name, scope, idp, hash, revoked, created ON scim_tokens
BEGIN
    UPDATE cache_generations SET tokens = tokens + 1 WHERE id = 1;
END;
