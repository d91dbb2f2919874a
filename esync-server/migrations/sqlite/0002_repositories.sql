-- Uptane repositories (Director and Image repository): signed metadata
-- files as served, and the Server's online signing keys.
CREATE TABLE repo_metadata (
    repo TEXT NOT NULL CHECK (repo IN ('director', 'image')),
    -- The VIN for per-vehicle Director files, '' for files shared by every
    -- vehicle (roots, the Image repository).
    scope TEXT NOT NULL,
    -- File name as a client fetches it (N.root.json, timestamp.json, ...).
    name TEXT NOT NULL,
    -- Signed version of the file; a stored file is only ever replaced by a
    -- higher version (enforced by the conditional upsert).
    version BIGINT NOT NULL,
    body BLOB NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (repo, scope, name)
);
CREATE TABLE signing_keys (
    repo TEXT NOT NULL CHECK (repo IN ('director', 'image')),
    role TEXT NOT NULL CHECK (role IN ('root', 'targets', 'snapshot', 'timestamp')),
    key_id TEXT NOT NULL,
    -- ed25519 seed (32 bytes).
    secret BLOB NOT NULL,
    created_ms BIGINT NOT NULL,
    retired_ms BIGINT,
    PRIMARY KEY (repo, key_id)
);
CREATE INDEX signing_keys_live ON signing_keys(repo, role) WHERE retired_ms IS NULL;
