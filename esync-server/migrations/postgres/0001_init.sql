-- esync-server schema, PostgreSQL. Times are milliseconds since the Unix epoch
-- (wall clock, passed in by the caller). Digests are 32-byte BYTEAs.
CREATE TABLE vehicles (
    vin TEXT PRIMARY KEY NOT NULL,
    model TEXT NOT NULL,
    region TEXT NOT NULL,
    hardware_ids TEXT NOT NULL, -- JSON array of strings
    created_ms BIGINT NOT NULL
);
CREATE TABLE ecus (
    serial TEXT PRIMARY KEY NOT NULL,
    vin TEXT NOT NULL REFERENCES vehicles(vin) ON DELETE CASCADE,
    hardware_id TEXT NOT NULL,
    is_primary BOOLEAN NOT NULL,
    public_key BYTEA NOT NULL
);
CREATE INDEX ecus_vin ON ecus(vin);
-- At most one primary ECU per vehicle, enforced by the database.
CREATE UNIQUE INDEX ecus_one_primary ON ecus(vin) WHERE is_primary;
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY NOT NULL,
    subject TEXT NOT NULL,
    der BYTEA NOT NULL,
    issued_ms BIGINT NOT NULL,
    not_after_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    revocation_reason TEXT
);
CREATE INDEX certificates_revoked ON certificates(revoked_ms) WHERE revoked_ms IS NOT NULL;
CREATE TABLE images (
    sha256 BYTEA PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    length BIGINT NOT NULL,
    hardware_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (name, version, hardware_id)
);
CREATE TABLE packages (
    id TEXT PRIMARY KEY NOT NULL,
    model_json TEXT NOT NULL, -- esync_package::Package as JSON
    created_ms BIGINT NOT NULL
);
CREATE TABLE assignments (
    package_id TEXT NOT NULL REFERENCES packages(id),
    vin TEXT NOT NULL REFERENCES vehicles(vin) ON DELETE CASCADE,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (package_id, vin)
);
CREATE INDEX assignments_vin ON assignments(vin);
CREATE TABLE vehicle_manifests (
    vin TEXT PRIMARY KEY NOT NULL REFERENCES vehicles(vin) ON DELETE CASCADE,
    hash BYTEA NOT NULL,
    body BYTEA NOT NULL,
    received_ms BIGINT NOT NULL
);
CREATE TABLE used_nonces (
    vin TEXT NOT NULL,
    nonce BYTEA NOT NULL,
    seen_ms BIGINT NOT NULL,
    PRIMARY KEY (vin, nonce)
);
CREATE INDEX used_nonces_seen ON used_nonces(seen_ms);
CREATE TABLE director_versions (
    vin TEXT NOT NULL,
    role TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (vin, role)
);
CREATE TABLE delta_jobs (
    id BIGSERIAL PRIMARY KEY,
    from_sha256 BYTEA NOT NULL,
    to_sha256 BYTEA NOT NULL,
    format TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    claimed_by TEXT,
    claimed_ms BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    result_sha256 BYTEA,
    result_length BIGINT,
    error TEXT,
    created_ms BIGINT NOT NULL,
    UNIQUE (from_sha256, to_sha256, format)
);
CREATE INDEX delta_jobs_state ON delta_jobs(state, id);
CREATE TABLE reports (
    vin TEXT NOT NULL,
    report_id TEXT NOT NULL,
    body BYTEA NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (vin, report_id)
);
CREATE TABLE admin_tokens (
    token_sha256 BYTEA PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('operator', 'viewer')),
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
