-- How many users and teams there are, kept by triggers, so that an unfiltered SCIM list
-- reads its totalResults from one row instead of counting a whole index. Statement-level
-- triggers with transition tables: a bulk insert of 100,000 users updates the row once.
-- Writers are already serialised (see store::locks), so the one row is no hot spot.
CREATE TABLE row_counts (
    name TEXT PRIMARY KEY,
    n    BIGINT NOT NULL
);

INSERT INTO row_counts (name, n) SELECT 'users', COUNT(*) FROM users;
INSERT INTO row_counts (name, n) SELECT 'teams', COUNT(*) FROM teams;

CREATE FUNCTION row_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE row_counts SET n = n + (SELECT COUNT(*) FROM added) WHERE name = TG_TABLE_NAME;
    RETURN NULL;
END
$$;

CREATE FUNCTION row_counts_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE row_counts SET n = n - (SELECT COUNT(*) FROM removed) WHERE name = TG_TABLE_NAME;
    RETURN NULL;
END
$$;

CREATE TRIGGER users_counted_on_insert AFTER INSERT ON users
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION row_counts_add();
CREATE TRIGGER users_counted_on_delete AFTER DELETE ON users
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION row_counts_remove();
CREATE TRIGGER teams_counted_on_insert AFTER INSERT ON teams
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION row_counts_add();
CREATE TRIGGER teams_counted_on_delete AFTER DELETE ON teams
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION row_counts_remove();
