-- How many users and teams there are, kept by triggers, so that an unfiltered SCIM list
-- reads its totalResults from one row instead of counting a whole index (1.9 ms for
-- 100,000 users, paid again after every commit).
CREATE TABLE row_counts (
    name TEXT PRIMARY KEY,
    n    INTEGER NOT NULL
);

INSERT INTO row_counts (name, n) SELECT 'users', COUNT(*) FROM users;
INSERT INTO row_counts (name, n) SELECT 'teams', COUNT(*) FROM teams;

CREATE TRIGGER users_counted_on_insert AFTER INSERT ON users
BEGIN
    UPDATE row_counts SET n = n + 1 WHERE name = 'users';
END;

CREATE TRIGGER users_counted_on_delete AFTER DELETE ON users
BEGIN
    UPDATE row_counts SET n = n - 1 WHERE name = 'users';
END;

CREATE TRIGGER teams_counted_on_insert AFTER INSERT ON teams
BEGIN
    UPDATE row_counts SET n = n + 1 WHERE name = 'teams';
END;

CREATE TRIGGER teams_counted_on_delete AFTER DELETE ON teams
BEGIN
    UPDATE row_counts SET n = n - 1 WHERE name = 'teams';
END;
