//! The PostgreSQL cluster the benchmark runs against: a database per job, and what
//! `pg_stat_activity` says about the server's connections.

use tokio_postgres::NoTls;

use crate::{Res, clock::log};

pub struct Cluster {
    pub admin_url: String,
    pub admin: tokio_postgres::Client,
    pub postmaster: u32,
    pub version: String,
}

pub fn db_url(admin: &str, name: &str) -> Res<String> {
    let scheme_end = admin.find("://").ok_or("DATABASE_URL must be a URL")? + 3;
    let (head, query) = match admin.find('?') {
        Some(i) => (&admin[..i], &admin[i..]),
        None => (admin, ""),
    };
    let rest = &head[scheme_end..];
    let authority = rest.find('/').map_or(rest, |i| &rest[..i]);
    Ok(format!("{}{authority}/{name}{query}", &head[..scheme_end]))
}

pub async fn connect(url: &str) -> Res<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl Cluster {
    pub async fn open(admin_url: String) -> Res<Cluster> {
        let admin = connect(&admin_url).await?;
        let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
        let data_dir: String = admin.query_one("SHOW data_directory", &[]).await?.get(0);
        let postmaster = std::fs::read_to_string(format!("{data_dir}/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0);
        Ok(Cluster {
            admin_url,
            admin,
            postmaster,
            version,
        })
    }

    /// A new empty database; returns its URL.
    pub async fn fresh_db(&self, name: &str) -> Res<String> {
        self.drop_db(name).await;
        self.admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        db_url(&self.admin_url, name)
    }

    pub async fn drop_db(&self, name: &str) {
        if let Err(e) = self
            .admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
        {
            log(format!("drop database {name}: {e}"));
        }
    }

    pub async fn listener_backends(&self, db: &str) -> i64 {
        self.admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'boardcast listener'",
                &[&db],
            )
            .await
            .map_or(-1, |r| r.get(0))
    }

    /// Proportional set size of the listener backends, KiB each (0 if none).
    pub async fn listener_pss_kib(&self, db: &str) -> f64 {
        let Ok(rows) = self
            .admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'boardcast listener'",
                &[&db],
            )
            .await
        else {
            return 0.0;
        };
        if rows.is_empty() {
            return 0.0;
        }
        let total: u64 = rows
            .iter()
            .map(|r| {
                let pid: i32 = r.get(0);
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("Pss:"))
                            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    })
                    .unwrap_or(0)
            })
            .sum();
        total as f64 / rows.len() as f64
    }

    pub async fn backends(&self, db: &str) -> i64 {
        self.admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&db],
            )
            .await
            .map_or(-1, |r| r.get(0))
    }
}
