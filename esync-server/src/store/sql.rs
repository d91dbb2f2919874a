//! The SQL shared by both backends. The statements are written once, in the
//! dialect common to SQLite (3.35+) and PostgreSQL (`$n` parameters,
//! `ON CONFLICT`, `RETURNING`); [`store_impl!`] instantiates them for a
//! concrete pool type. Only the job claim differs (PostgreSQL adds
//! `FOR UPDATE SKIP LOCKED`).

use super::{DbError, Digest};

/// Maps a driver error: unique violations become [`DbError::Conflict`],
/// foreign-key violations [`DbError::NotFound`].
pub(super) fn map_err(e: sqlx::Error, entity: &'static str, key: &str) -> DbError {
    if let sqlx::Error::Database(d) = &e {
        match d.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                return DbError::Conflict {
                    entity,
                    key: key.to_owned(),
                }
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return DbError::NotFound {
                    entity: "referenced row",
                    key: key.to_owned(),
                }
            }
            _ => {}
        }
    }
    DbError::Sqlx(e)
}

pub(super) fn digest(v: Vec<u8>, column: &'static str) -> Result<Digest, DbError> {
    <Digest>::try_from(v.as_slice()).map_err(|_| DbError::Corrupt {
        column,
        reason: format!("{} bytes, want 32", v.len()),
    })
}

pub(super) fn to_u64(v: i64, column: &'static str) -> Result<u64, DbError> {
    u64::try_from(v).map_err(|_| DbError::Corrupt {
        column,
        reason: format!("negative value {v}"),
    })
}

pub(super) fn to_i64(v: u64, what: &'static str) -> Result<i64, DbError> {
    i64::try_from(v).map_err(|_| DbError::Invalid {
        what,
        reason: format!("{v} exceeds i64"),
    })
}

pub(super) fn inserted(rows: u64) -> super::Inserted {
    if rows == 0 {
        super::Inserted::Existing
    } else {
        super::Inserted::New
    }
}

/// Writes a metadata file unless a version at least as high is stored.
pub(super) const PUT_METADATA: &str =
    "INSERT INTO repo_metadata (repo, scope, name, version, body, created_ms) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (repo, scope, name) DO UPDATE SET \
     version = excluded.version, body = excluded.body, created_ms = excluded.created_ms \
     WHERE repo_metadata.version < excluded.version";

macro_rules! job_cols {
    () => {
        "id, from_sha256, to_sha256, format, state, claimed_by, attempts, result_sha256, result_length, error"
    };
}
pub(super) use job_cols;

macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE delta_jobs SET state = 'running', claimed_by = $1, claimed_ms = $2, attempts = attempts + 1 \
             WHERE id = (SELECT id FROM delta_jobs \
               WHERE state = 'queued' OR (state = 'running' AND claimed_ms < $3) \
               ORDER BY id LIMIT 1 ",
            $lock,
            ") RETURNING ",
            $crate::store::sql::job_cols!()
        )
    };
}
pub(super) use claim_sql;

/// Implements [`super::Store`] for `$ty` (a struct with field `pool: $pool`)
/// whose rows are `$row`; `$claim` is the job claim statement.
macro_rules! store_impl {
    ($ty:ty, $row:ty, $claim:expr) => {
        impl $ty {
            fn vehicle_row(r: &$row) -> Result<$crate::store::Vehicle, $crate::store::DbError> {
                use sqlx::Row as _;
                let hw: String = r.try_get("hardware_ids")?;
                Ok($crate::store::Vehicle {
                    vin: r.try_get("vin")?,
                    model: r.try_get("model")?,
                    region: r.try_get("region")?,
                    hardware_ids: serde_json::from_str(&hw).map_err(|e| {
                        $crate::store::DbError::Corrupt {
                            column: "vehicles.hardware_ids",
                            reason: e.to_string(),
                        }
                    })?,
                })
            }

            fn ecu_row(r: &$row) -> Result<$crate::store::Ecu, $crate::store::DbError> {
                use sqlx::Row as _;
                Ok($crate::store::Ecu {
                    serial: r.try_get("serial")?,
                    vin: r.try_get("vin")?,
                    hardware_id: r.try_get("hardware_id")?,
                    primary: r.try_get("is_primary")?,
                    public_key: r.try_get("public_key")?,
                })
            }

            fn cert_row(
                r: &$row,
            ) -> Result<$crate::store::Certificate, $crate::store::DbError> {
                use sqlx::Row as _;
                Ok($crate::store::Certificate {
                    serial: r.try_get("serial")?,
                    subject: r.try_get("subject")?,
                    der: r.try_get("der")?,
                    issued_ms: r.try_get("issued_ms")?,
                    not_after_ms: r.try_get("not_after_ms")?,
                    revoked_ms: r.try_get("revoked_ms")?,
                    revocation_reason: r.try_get("revocation_reason")?,
                })
            }

            fn image_row(r: &$row) -> Result<$crate::store::Image, $crate::store::DbError> {
                use sqlx::Row as _;
                Ok($crate::store::Image {
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    sha256: $crate::store::sql::digest(r.try_get("sha256")?, "images.sha256")?,
                    length: $crate::store::sql::to_u64(r.try_get("length")?, "images.length")?,
                    hardware_id: r.try_get("hardware_id")?,
                })
            }

            fn job_row(r: &$row) -> Result<$crate::store::DeltaJob, $crate::store::DbError> {
                use sqlx::Row as _;
                let state: String = r.try_get("state")?;
                let result: Option<Vec<u8>> = r.try_get("result_sha256")?;
                let length: Option<i64> = r.try_get("result_length")?;
                Ok($crate::store::DeltaJob {
                    id: r.try_get("id")?,
                    from_sha256: $crate::store::sql::digest(
                        r.try_get("from_sha256")?,
                        "delta_jobs.from_sha256",
                    )?,
                    to_sha256: $crate::store::sql::digest(
                        r.try_get("to_sha256")?,
                        "delta_jobs.to_sha256",
                    )?,
                    format: r.try_get("format")?,
                    state: $crate::store::DeltaState::parse(&state)?,
                    claimed_by: r.try_get("claimed_by")?,
                    attempts: r.try_get("attempts")?,
                    result_sha256: result
                        .map(|v| $crate::store::sql::digest(v, "delta_jobs.result_sha256"))
                        .transpose()?,
                    result_length: length
                        .map(|v| $crate::store::sql::to_u64(v, "delta_jobs.result_length"))
                        .transpose()?,
                    error: r.try_get("error")?,
                })
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $ty {
            async fn upsert_vehicle(
                &self,
                v: &$crate::store::Vehicle,
                now_ms: i64,
            ) -> Result<(), $crate::store::DbError> {
                let hw = serde_json::to_string(&v.hardware_ids).map_err(|e| {
                    $crate::store::DbError::Invalid {
                        what: "hardware ids",
                        reason: e.to_string(),
                    }
                })?;
                sqlx::query(
                    "INSERT INTO vehicles (vin, model, region, hardware_ids, created_ms) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (vin) DO UPDATE SET \
                     model = excluded.model, region = excluded.region, \
                     hardware_ids = excluded.hardware_ids",
                )
                .bind(&v.vin)
                .bind(&v.model)
                .bind(&v.region)
                .bind(hw)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "vehicle", &v.vin))?;
                Ok(())
            }

            async fn vehicle(
                &self,
                vin: &str,
            ) -> Result<Option<$crate::store::Vehicle>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM vehicles WHERE vin = $1")
                    .bind(vin)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::vehicle_row)
                    .transpose()
            }

            async fn vehicles(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<$crate::store::Vehicle>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM vehicles WHERE vin > $1 ORDER BY vin LIMIT $2")
                    .bind(after.unwrap_or(""))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(Self::vehicle_row)
                    .collect()
            }

            async fn upsert_ecu(
                &self,
                e: &$crate::store::Ecu,
            ) -> Result<(), $crate::store::DbError> {
                sqlx::query(
                    "INSERT INTO ecus (serial, vin, hardware_id, is_primary, public_key) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (serial) DO UPDATE SET \
                     vin = excluded.vin, hardware_id = excluded.hardware_id, \
                     is_primary = excluded.is_primary, public_key = excluded.public_key",
                )
                .bind(&e.serial)
                .bind(&e.vin)
                .bind(&e.hardware_id)
                .bind(e.primary)
                .bind(&e.public_key)
                .execute(&self.pool)
                .await
                .map_err(|err| $crate::store::sql::map_err(err, "primary ECU", &e.vin))?;
                Ok(())
            }

            async fn ecus(
                &self,
                vin: &str,
            ) -> Result<Vec<$crate::store::Ecu>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM ecus WHERE vin = $1 ORDER BY serial")
                    .bind(vin)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(Self::ecu_row)
                    .collect()
            }

            async fn insert_certificate(
                &self,
                c: &$crate::store::Certificate,
            ) -> Result<(), $crate::store::DbError> {
                sqlx::query(
                    "INSERT INTO certificates (serial, subject, der, issued_ms, not_after_ms, \
                     revoked_ms, revocation_reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&c.serial)
                .bind(&c.subject)
                .bind(&c.der)
                .bind(c.issued_ms)
                .bind(c.not_after_ms)
                .bind(c.revoked_ms)
                .bind(&c.revocation_reason)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "certificate", &c.serial))?;
                Ok(())
            }

            async fn certificate(
                &self,
                serial: &str,
            ) -> Result<Option<$crate::store::Certificate>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM certificates WHERE serial = $1")
                    .bind(serial)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::cert_row)
                    .transpose()
            }

            async fn revoke_certificate(
                &self,
                serial: &str,
                reason: Option<&str>,
                now_ms: i64,
            ) -> Result<$crate::store::Inserted, $crate::store::DbError> {
                let r = sqlx::query(
                    "UPDATE certificates SET revoked_ms = $1, revocation_reason = $2 \
                     WHERE serial = $3 AND revoked_ms IS NULL",
                )
                .bind(now_ms)
                .bind(reason)
                .bind(serial)
                .execute(&self.pool)
                .await?;
                if r.rows_affected() == 1 {
                    return Ok($crate::store::Inserted::New);
                }
                match self.certificate(serial).await? {
                    Some(_) => Ok($crate::store::Inserted::Existing),
                    None => Err($crate::store::DbError::NotFound {
                        entity: "certificate",
                        key: serial.to_owned(),
                    }),
                }
            }

            async fn revocations(
                &self,
                now_ms: i64,
            ) -> Result<Vec<$crate::store::Revocation>, $crate::store::DbError> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT serial, revoked_ms, revocation_reason FROM certificates \
                     WHERE revoked_ms IS NOT NULL AND not_after_ms > $1 ORDER BY serial",
                )
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| -> Result<$crate::store::Revocation, $crate::store::DbError> {
                        Ok($crate::store::Revocation {
                            serial: r.try_get("serial")?,
                            revoked_ms: r.try_get("revoked_ms")?,
                            reason: r.try_get("revocation_reason")?,
                        })
                    })
                    .collect()
            }

            async fn insert_image(
                &self,
                i: &$crate::store::Image,
                now_ms: i64,
            ) -> Result<$crate::store::Inserted, $crate::store::DbError> {
                let key = format!("{} {} {}", i.name, i.version, i.hardware_id);
                let r = sqlx::query(
                    "INSERT INTO images (sha256, name, version, length, hardware_id, created_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&i.sha256[..])
                .bind(&i.name)
                .bind(&i.version)
                .bind($crate::store::sql::to_i64(i.length, "image length")?)
                .bind(&i.hardware_id)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "image", &key))?;
                if r.rows_affected() == 1 {
                    return Ok($crate::store::Inserted::New);
                }
                match self.image(&i.sha256).await? {
                    Some(old) if old == *i => Ok($crate::store::Inserted::Existing),
                    _ => Err($crate::store::DbError::Conflict {
                        entity: "image digest",
                        key,
                    }),
                }
            }

            async fn image(
                &self,
                sha256: &$crate::store::Digest,
            ) -> Result<Option<$crate::store::Image>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM images WHERE sha256 = $1")
                    .bind(&sha256[..])
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::image_row)
                    .transpose()
            }

            async fn image_by_name(
                &self,
                name: &str,
                version: &str,
                hardware_id: &str,
            ) -> Result<Option<$crate::store::Image>, $crate::store::DbError> {
                sqlx::query(
                    "SELECT * FROM images WHERE name = $1 AND version = $2 AND hardware_id = $3",
                )
                .bind(name)
                .bind(version)
                .bind(hardware_id)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(Self::image_row)
                .transpose()
            }

            async fn insert_package(
                &self,
                p: &$crate::store::PackageRecord,
            ) -> Result<(), $crate::store::DbError> {
                sqlx::query(
                    "INSERT INTO packages (id, model_json, created_ms) VALUES ($1, $2, $3)",
                )
                .bind(&p.id)
                .bind(&p.model_json)
                .bind(p.created_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "package", &p.id))?;
                Ok(())
            }

            async fn package(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::PackageRecord>, $crate::store::DbError> {
                use sqlx::Row as _;
                let Some(r) = sqlx::query("SELECT * FROM packages WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some($crate::store::PackageRecord {
                    id: r.try_get("id")?,
                    model_json: r.try_get("model_json")?,
                    created_ms: r.try_get("created_ms")?,
                }))
            }

            async fn assign(
                &self,
                package_id: &str,
                vin: &str,
                now_ms: i64,
            ) -> Result<$crate::store::Inserted, $crate::store::DbError> {
                let r = sqlx::query(
                    "INSERT INTO assignments (package_id, vin, created_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (package_id, vin) DO NOTHING",
                )
                .bind(package_id)
                .bind(vin)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    $crate::store::sql::map_err(e, "assignment", &format!("{package_id} {vin}"))
                })?;
                Ok($crate::store::sql::inserted(r.rows_affected()))
            }

            async fn unassign(
                &self,
                package_id: &str,
                vin: &str,
            ) -> Result<bool, $crate::store::DbError> {
                let r = sqlx::query("DELETE FROM assignments WHERE package_id = $1 AND vin = $2")
                    .bind(package_id)
                    .bind(vin)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn assignments(&self, vin: &str) -> Result<Vec<String>, $crate::store::DbError> {
                Ok(sqlx::query_scalar(
                    "SELECT package_id FROM assignments WHERE vin = $1 \
                     ORDER BY created_ms, package_id",
                )
                .bind(vin)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn put_manifest(
                &self,
                m: &$crate::store::ManifestRecord,
            ) -> Result<(), $crate::store::DbError> {
                sqlx::query(
                    "INSERT INTO vehicle_manifests (vin, hash, body, received_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (vin) DO UPDATE SET \
                     hash = excluded.hash, body = excluded.body, received_ms = excluded.received_ms",
                )
                .bind(&m.vin)
                .bind(&m.hash)
                .bind(&m.body)
                .bind(m.received_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "manifest", &m.vin))?;
                Ok(())
            }

            async fn manifest(
                &self,
                vin: &str,
            ) -> Result<Option<$crate::store::ManifestRecord>, $crate::store::DbError> {
                use sqlx::Row as _;
                let Some(r) = sqlx::query("SELECT * FROM vehicle_manifests WHERE vin = $1")
                    .bind(vin)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some($crate::store::ManifestRecord {
                    vin: r.try_get("vin")?,
                    hash: r.try_get("hash")?,
                    body: r.try_get("body")?,
                    received_ms: r.try_get("received_ms")?,
                }))
            }

            async fn use_nonce(
                &self,
                vin: &str,
                nonce: &[u8],
                now_ms: i64,
            ) -> Result<$crate::store::Inserted, $crate::store::DbError> {
                let r = sqlx::query(
                    "INSERT INTO used_nonces (vin, nonce, seen_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (vin, nonce) DO NOTHING",
                )
                .bind(vin)
                .bind(nonce)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok($crate::store::sql::inserted(r.rows_affected()))
            }

            async fn prune_nonces(&self, before_ms: i64) -> Result<u64, $crate::store::DbError> {
                let r = sqlx::query("DELETE FROM used_nonces WHERE seen_ms < $1")
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }

            async fn next_director_version(
                &self,
                vin: &str,
                role: &str,
            ) -> Result<u64, $crate::store::DbError> {
                let v: i64 = sqlx::query_scalar(
                    "INSERT INTO director_versions (vin, role, version) VALUES ($1, $2, 1) \
                     ON CONFLICT (vin, role) DO UPDATE SET version = director_versions.version + 1 \
                     RETURNING version",
                )
                .bind(vin)
                .bind(role)
                .fetch_one(&self.pool)
                .await?;
                $crate::store::sql::to_u64(v, "director_versions.version")
            }

            async fn director_version(
                &self,
                vin: &str,
                role: &str,
            ) -> Result<u64, $crate::store::DbError> {
                let v: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM director_versions WHERE vin = $1 AND role = $2",
                )
                .bind(vin)
                .bind(role)
                .fetch_optional(&self.pool)
                .await?;
                $crate::store::sql::to_u64(v.unwrap_or(0), "director_versions.version")
            }

            async fn enqueue_delta(
                &self,
                from: &$crate::store::Digest,
                to: &$crate::store::Digest,
                format: &str,
                now_ms: i64,
            ) -> Result<($crate::store::DeltaJob, $crate::store::Inserted), $crate::store::DbError>
            {
                let r = sqlx::query(
                    "INSERT INTO delta_jobs (from_sha256, to_sha256, format, state, created_ms) \
                     VALUES ($1, $2, $3, 'queued', $4) \
                     ON CONFLICT (from_sha256, to_sha256, format) DO NOTHING",
                )
                .bind(&from[..])
                .bind(&to[..])
                .bind(format)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                let job = self.delta_job(from, to, format).await?.ok_or_else(|| {
                    $crate::store::DbError::NotFound {
                        entity: "delta job",
                        key: format.to_owned(),
                    }
                })?;
                Ok((job, $crate::store::sql::inserted(r.rows_affected())))
            }

            async fn claim_delta(
                &self,
                worker: &str,
                now_ms: i64,
                lease_ms: i64,
            ) -> Result<Option<$crate::store::DeltaJob>, $crate::store::DbError> {
                sqlx::query($claim)
                    .bind(worker)
                    .bind(now_ms)
                    .bind(now_ms.saturating_sub(lease_ms))
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::job_row)
                    .transpose()
            }

            async fn finish_delta(
                &self,
                id: i64,
                worker: &str,
                result: &$crate::store::Digest,
                length: u64,
            ) -> Result<bool, $crate::store::DbError> {
                let r = sqlx::query(
                    "UPDATE delta_jobs SET state = 'done', result_sha256 = $1, result_length = $2 \
                     WHERE id = $3 AND claimed_by = $4 AND state = 'running'",
                )
                .bind(&result[..])
                .bind($crate::store::sql::to_i64(length, "delta length")?)
                .bind(id)
                .bind(worker)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn fail_delta(
                &self,
                id: i64,
                worker: &str,
                error: &str,
            ) -> Result<bool, $crate::store::DbError> {
                let r = sqlx::query(
                    "UPDATE delta_jobs SET state = 'failed', error = $1 \
                     WHERE id = $2 AND claimed_by = $3 AND state = 'running'",
                )
                .bind(error)
                .bind(id)
                .bind(worker)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn delta_job(
                &self,
                from: &$crate::store::Digest,
                to: &$crate::store::Digest,
                format: &str,
            ) -> Result<Option<$crate::store::DeltaJob>, $crate::store::DbError> {
                sqlx::query(concat!(
                    "SELECT ",
                    $crate::store::sql::job_cols!(),
                    " FROM delta_jobs WHERE from_sha256 = $1 AND to_sha256 = $2 AND format = $3"
                ))
                .bind(&from[..])
                .bind(&to[..])
                .bind(format)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(Self::job_row)
                .transpose()
            }

            async fn insert_report(
                &self,
                vin: &str,
                report_id: &str,
                body: &[u8],
                now_ms: i64,
            ) -> Result<$crate::store::Inserted, $crate::store::DbError> {
                let r = sqlx::query(
                    "INSERT INTO reports (vin, report_id, body, received_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (vin, report_id) DO NOTHING",
                )
                .bind(vin)
                .bind(report_id)
                .bind(body)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok($crate::store::sql::inserted(r.rows_affected()))
            }

            async fn reports(
                &self,
                vin: &str,
            ) -> Result<Vec<(String, Vec<u8>, i64)>, $crate::store::DbError> {
                Ok(sqlx::query_as(
                    "SELECT report_id, body, received_ms FROM reports WHERE vin = $1 \
                     ORDER BY received_ms, report_id",
                )
                .bind(vin)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn report(
                &self,
                vin: &str,
                report_id: &str,
            ) -> Result<Option<Vec<u8>>, $crate::store::DbError> {
                Ok(sqlx::query_scalar(
                    "SELECT body FROM reports WHERE vin = $1 AND report_id = $2",
                )
                .bind(vin)
                .bind(report_id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn put_metadata(
                &self,
                m: &$crate::store::MetadataRecord,
            ) -> Result<bool, $crate::store::DbError> {
                let r = sqlx::query($crate::store::sql::PUT_METADATA)
                    .bind(m.repo.as_str())
                    .bind(&m.scope)
                    .bind(&m.name)
                    .bind($crate::store::sql::to_i64(m.version, "metadata version")?)
                    .bind(&m.body)
                    .bind(m.created_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn metadata(
                &self,
                repo: $crate::store::RepoKind,
                scope: &str,
                name: &str,
            ) -> Result<Option<$crate::store::MetadataRecord>, $crate::store::DbError> {
                use sqlx::Row as _;
                let row = sqlx::query(
                    "SELECT version, body, created_ms FROM repo_metadata \
                     WHERE repo = $1 AND scope = $2 AND name = $3",
                )
                .bind(repo.as_str())
                .bind(scope)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    Ok($crate::store::MetadataRecord {
                        repo,
                        scope: scope.to_owned(),
                        name: name.to_owned(),
                        version: $crate::store::sql::to_u64(
                            r.try_get("version")?,
                            "repo_metadata.version",
                        )?,
                        body: r.try_get("body")?,
                        created_ms: r.try_get("created_ms")?,
                    })
                })
                .transpose()
            }

            async fn signing_keys(
                &self,
                repo: $crate::store::RepoKind,
                role: &str,
            ) -> Result<Vec<$crate::store::SigningKeyRecord>, $crate::store::DbError> {
                let rows: Vec<(String, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT key_id, secret, created_ms FROM signing_keys \
                     WHERE repo = $1 AND role = $2 AND retired_ms IS NULL \
                     ORDER BY created_ms, key_id",
                )
                .bind(repo.as_str())
                .bind(role)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(key_id, secret, created_ms)| $crate::store::SigningKeyRecord {
                        repo,
                        role: role.to_owned(),
                        key_id,
                        secret,
                        created_ms,
                    })
                    .collect())
            }

            async fn replace_signing_keys(
                &self,
                repo: $crate::store::RepoKind,
                role: &str,
                keys: &[$crate::store::SigningKeyRecord],
                files: &[$crate::store::MetadataRecord],
                now_ms: i64,
            ) -> Result<(), $crate::store::DbError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "UPDATE signing_keys SET retired_ms = $3 \
                     WHERE repo = $1 AND role = $2 AND retired_ms IS NULL",
                )
                .bind(repo.as_str())
                .bind(role)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                for k in keys {
                    sqlx::query(
                        "INSERT INTO signing_keys (repo, role, key_id, secret, created_ms) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(repo.as_str())
                    .bind(role)
                    .bind(&k.key_id)
                    .bind(&k.secret)
                    .bind(k.created_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::store::sql::map_err(e, "signing key", &k.key_id))?;
                }
                for m in files {
                    let r = sqlx::query($crate::store::sql::PUT_METADATA)
                        .bind(m.repo.as_str())
                        .bind(&m.scope)
                        .bind(&m.name)
                        .bind($crate::store::sql::to_i64(m.version, "metadata version")?)
                        .bind(&m.body)
                        .bind(m.created_ms)
                        .execute(&mut *tx)
                        .await?;
                    if r.rows_affected() == 0 {
                        return Err($crate::store::DbError::Conflict {
                            entity: "metadata file",
                            key: m.name.clone(),
                        });
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn insert_admin_token(
                &self,
                name: &str,
                token_sha256: &$crate::store::Digest,
                role: $crate::store::AdminRole,
                now_ms: i64,
            ) -> Result<(), $crate::store::DbError> {
                sqlx::query(
                    "INSERT INTO admin_tokens (token_sha256, name, role, created_ms) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&token_sha256[..])
                .bind(name)
                .bind(role.as_str())
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "admin token", name))?;
                Ok(())
            }

            async fn admin_token_role(
                &self,
                token_sha256: &$crate::store::Digest,
            ) -> Result<Option<$crate::store::AdminRole>, $crate::store::DbError> {
                let r: Option<String> = sqlx::query_scalar(
                    "SELECT role FROM admin_tokens WHERE token_sha256 = $1 AND revoked_ms IS NULL",
                )
                .bind(&token_sha256[..])
                .fetch_optional(&self.pool)
                .await?;
                r.as_deref().map($crate::store::AdminRole::parse).transpose()
            }

            async fn revoke_admin_token(
                &self,
                name: &str,
                now_ms: i64,
            ) -> Result<bool, $crate::store::DbError> {
                let r = sqlx::query(
                    "UPDATE admin_tokens SET revoked_ms = $1 WHERE name = $2 AND revoked_ms IS NULL",
                )
                .bind(now_ms)
                .bind(name)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn import_fleet(
                &self,
                vehicles: &[$crate::store::Vehicle],
                ecus: &[$crate::store::Ecu],
                now_ms: i64,
            ) -> Result<u64, $crate::store::DbError> {
                type Db = <$row as sqlx::Row>::Database;
                const BATCH: usize = $crate::store::IMPORT_BATCH;
                // Encode everything before the first write: bad input
                // leaves the database untouched.
                let hw = vehicles
                    .iter()
                    .map(|v| {
                        serde_json::to_string(&v.hardware_ids).map_err(|e| {
                            $crate::store::DbError::Invalid {
                                what: "hardware ids",
                                reason: e.to_string(),
                            }
                        })
                    })
                    .collect::<Result<Vec<String>, _>>()?;
                let mut tx = self.pool.begin().await?;
                let mut inserted = 0u64;
                for (chunk, hw) in vehicles.chunks(BATCH).zip(hw.chunks(BATCH)) {
                    let mut q = sqlx::QueryBuilder::<Db>::new(
                        "INSERT INTO vehicles (vin, model, region, hardware_ids, created_ms) ",
                    );
                    q.push_values(chunk.iter().zip(hw), |mut b, (v, hw)| {
                        b.push_bind(&v.vin)
                            .push_bind(&v.model)
                            .push_bind(&v.region)
                            .push_bind(hw)
                            .push_bind(now_ms);
                    });
                    inserted += q
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| {
                            $crate::store::sql::map_err(e, "vehicle (import batch)", &chunk[0].vin)
                        })?
                        .rows_affected();
                }
                for chunk in ecus.chunks(BATCH) {
                    let mut q = sqlx::QueryBuilder::<Db>::new(
                        "INSERT INTO ecus (serial, vin, hardware_id, is_primary, public_key) ",
                    );
                    q.push_values(chunk, |mut b, e| {
                        b.push_bind(&e.serial)
                            .push_bind(&e.vin)
                            .push_bind(&e.hardware_id)
                            .push_bind(e.primary)
                            .push_bind(&e.public_key);
                    });
                    q.build().execute(&mut *tx).await.map_err(|e| {
                        $crate::store::sql::map_err(e, "ECU (import batch)", &chunk[0].serial)
                    })?;
                }
                tx.commit().await?;
                Ok(inserted)
            }
        }
    };
}
pub(super) use store_impl;
