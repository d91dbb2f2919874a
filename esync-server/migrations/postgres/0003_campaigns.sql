-- Campaigns: waves of offers of one package to a snapshot of matching
-- vehicles, per-vehicle state and history, the rollback block, and what
-- each vehicle's last verified manifest says it runs.
CREATE TABLE campaigns (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    package_id TEXT NOT NULL REFERENCES packages(id),
    spec TEXT NOT NULL, -- the CampaignSpec as JSON (targeting, waves, thresholds)
    state TEXT NOT NULL CHECK (state IN
        ('draft', 'running', 'waiting_approval', 'paused', 'aborted', 'completed')),
    reason TEXT,
    current_wave BIGINT NOT NULL DEFAULT 0, -- 0 before start, then 1..=wave count
    wave_count BIGINT NOT NULL DEFAULT 0,
    matched BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX campaigns_package ON campaigns(package_id);
CREATE TABLE campaign_members (
    campaign_id BIGINT NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    vin TEXT NOT NULL REFERENCES vehicles(vin) ON DELETE CASCADE,
    wave BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('pending', 'offered', 'succeeded', 'failed', 'rolled_back', 'aborted')),
    offered_ms BIGINT,
    finished_ms BIGINT,
    PRIMARY KEY (campaign_id, vin)
);
-- The check-in's "anything due?" query: pending members of one vehicle.
CREATE INDEX campaign_members_pending ON campaign_members(vin) WHERE state = 'pending';
CREATE INDEX campaign_members_offered ON campaign_members(vin) WHERE state = 'offered';
CREATE INDEX campaign_members_wave ON campaign_members(campaign_id, wave, state);
CREATE TABLE campaign_events (
    id BIGSERIAL PRIMARY KEY,
    campaign_id BIGINT NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    vin TEXT, -- NULL for an event of the campaign itself
    at_ms BIGINT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX campaign_events_member ON campaign_events(campaign_id, vin, id);
-- A package a vehicle did not install (rolled back, failed, refused): not
-- directed to it again until an operator clears the block.
CREATE TABLE rollback_blocks (
    vin TEXT NOT NULL REFERENCES vehicles(vin) ON DELETE CASCADE,
    package_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (vin, package_id)
);
-- What each ECU runs, from the vehicle's last verified manifest (replaced
-- whole on every accepted manifest). version is the Image repository's
-- version of that image, '' when the Server does not know the image.
CREATE TABLE installed_images (
    vin TEXT NOT NULL REFERENCES vehicles(vin) ON DELETE CASCADE,
    ecu_serial TEXT NOT NULL,
    hardware_id TEXT NOT NULL,
    sha256 BYTEA NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (vin, ecu_serial)
);
CREATE INDEX installed_images_version ON installed_images(hardware_id, version);
