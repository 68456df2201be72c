//! `switchboard registry` (run the built-in registry) and `switchboard list`
//! (show what a registry knows).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_registry::model::{Health, InstanceRecord};
use switchboard_registry::{etcd, RegistryClient, RegistryConfig, RegistryServer};

/// Run a registry on `listen` until Ctrl-C or SIGTERM.
pub(crate) async fn serve(
    listen: &str,
    heartbeat: Duration,
    ttl: Duration,
    self_preservation: bool,
) -> anyhow::Result<()> {
    let config =
        RegistryConfig::default().heartbeat_interval(heartbeat).default_ttl(ttl).self_preservation(self_preservation);
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let handle = RegistryServer::builder().config(config).build().spawn(listener)?;
    // The one line of stdout: scripts read the bound address from it.
    println!("registry listening on http://{}", handle.local_addr());
    switchboard::server::shutdown_signal().await;
    handle.shutdown().await?;
    Ok(())
}

/// Print every service and its instances.
pub(crate) async fn list(registry: &str) -> anyhow::Result<()> {
    if registry.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("etcd://")) {
        return list_etcd(registry).await;
    }
    let client = RegistryClient::new(registry)?;
    let services = client.services().await?;
    let mut out = String::new();
    if services.self_preservation {
        writeln!(out, "registry is in SELF-PRESERVATION: most heartbeats stopped at once; nothing is being evicted")?;
    }
    if services.services.is_empty() {
        writeln!(out, "no services registered")?;
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    for service in &services.services {
        let instances = client.instances(&service.name).await?;
        writeln!(
            out,
            "{} ({} instance{})",
            service.name,
            instances.instances.len(),
            plural(instances.instances.len())
        )?;
        // The union of what the instances serve; during a rolling upgrade
        // they may differ, which the marker shows.
        let all: std::collections::BTreeSet<&str> =
            instances.instances.iter().flat_map(|i| i.methods.iter().map(String::as_str)).collect();
        let uniform = instances.instances.iter().all(|i| i.methods.len() == all.len());
        let methods = if all.is_empty() { "-".to_owned() } else { all.into_iter().collect::<Vec<_>>().join(", ") };
        writeln!(out, "  methods: {methods}{}", if uniform { "" } else { " (not on every instance)" })?;
        writeln!(
            out,
            "  {:<24} {:<22} {:<10} {:<10} {:>6}  {:<8} {:>9}",
            "ID", "ADDRESS", "VERSION", "ZONE", "WEIGHT", "HEALTH", "HEARTBEAT"
        )?;
        for instance in &instances.instances {
            writeln!(out, "{}", row(instance, now_ms))?;
        }
    }
    print!("{out}");
    Ok(())
}

/// `switchboard list` for etcd: the records under `<root>/services/`, with
/// the lease each sits on and its remaining TTL.
async fn list_etcd(registry: &str) -> anyhow::Result<()> {
    let options: etcd::EtcdOptions = registry.parse()?;
    let conn = etcd::EtcdConnection::new(options);
    let services = etcd::services(&conn).await?;
    let mut leases: std::collections::HashMap<i64, Option<Duration>> = std::collections::HashMap::new();
    for record in services.iter().flat_map(|(_, records)| records) {
        if record.lease != 0 && !leases.contains_key(&record.lease) {
            leases.insert(record.lease, etcd::lease_remaining(&conn, record.lease).await?);
        }
    }
    let mut out = String::new();
    if services.is_empty() {
        writeln!(out, "no services registered")?;
    }
    for (name, records) in &services {
        writeln!(out, "{name} ({} instance{})", records.len(), plural(records.len()))?;
        let all: std::collections::BTreeSet<&str> =
            records.iter().flat_map(|r| r.record.methods.iter().map(String::as_str)).collect();
        let uniform = records.iter().all(|r| r.record.methods.len() == all.len());
        let methods = if all.is_empty() { "-".to_owned() } else { all.into_iter().collect::<Vec<_>>().join(", ") };
        writeln!(out, "  methods: {methods}{}", if uniform { "" } else { " (not on every instance)" })?;
        writeln!(
            out,
            "  {:<24} {:<22} {:<10} {:<10} {:>6}  {:<17} {:>7}",
            "ID", "ADDRESS", "VERSION", "ZONE", "WEIGHT", "LEASE", "TTL"
        )?;
        for stored in records {
            let r = &stored.record;
            let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
            let (lease, ttl) = match stored.lease {
                0 => ("none".to_owned(), "-".to_owned()),
                id => (
                    format!("{id:x}"),
                    match leases.get(&id).copied().flatten() {
                        Some(left) => format!("{}s", left.as_secs()),
                        None => "expired".to_owned(),
                    },
                ),
            };
            writeln!(
                out,
                "  {:<24} {:<22} {:<10} {:<10} {:>6}  {:<17} {:>7}",
                r.id,
                r.address,
                dash(&r.metadata.version),
                dash(&r.metadata.zone),
                r.metadata.weight,
                lease,
                ttl
            )?;
        }
    }
    print!("{out}");
    Ok(())
}

fn row(i: &InstanceRecord, now_ms: u64) -> String {
    let health = match i.health {
        Health::Passing => "passing",
        Health::Expired => "expired",
    };
    let age = Duration::from_millis(now_ms.saturating_sub(i.last_heartbeat_ms));
    let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
    format!(
        "  {:<24} {:<22} {:<10} {:<10} {:>6}  {:<8} {:>8.1}s",
        i.id,
        i.address,
        dash(&i.metadata.version),
        dash(&i.metadata.zone),
        i.metadata.weight,
        health,
        age.as_secs_f64()
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
