//! The registry's limits over real sockets on 127.0.0.1:0: caps on
//! instances and metadata, addresses no caller can dial, listings bounded
//! by the listing cap, and self-preservation that never-heartbeating
//! registrations cannot switch on.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{registry, Registry};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchboard::discovery::{Change, Discover};
use switchboard_registry::model::{metadata_len, InstanceMeta};
use switchboard_registry::{BuiltinDiscover, RegistryClient, RegistryConfig};

impl Registry {
    async fn register(&self, body: &Value) -> (StatusCode, Value) {
        let resp = self.http.put(self.url("/v1/instances")).json(body).send().await.unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    async fn heartbeat(&self, service: &str, id: &str) -> StatusCode {
        self.http.put(self.url(&format!("/v1/instances/{service}/{id}/heartbeat"))).send().await.unwrap().status()
    }

    /// `/v1/status` without the warm-up countdown (it moves on its own).
    async fn status(&self) -> Value {
        let mut status: Value = self.http.get(self.url("/v1/status")).send().await.unwrap().json().await.unwrap();
        status.as_object_mut().map(|o| o.remove("warming_up_ms"));
        status
    }

    /// GET `path`: the status and the body's bytes.
    async fn raw(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        (resp.status(), resp.bytes().await.unwrap().to_vec())
    }
}

fn instance(service: &str, id: &str) -> Value {
    json!({"service": service, "id": id, "address": "127.0.0.1:9000", "ttl_ms": 3_600_000})
}

/// The refusal must be the documented status and code, name the limit and
/// its value, and change nothing.
async fn assert_refused(reg: &Registry, body: &Value, status: StatusCode, code: &str, mentions: &[&str]) {
    let before = reg.status().await;
    let (got, answer) = reg.register(body).await;
    assert_eq!(got, status, "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
    let message = answer["error"].as_str().unwrap();
    for part in mentions {
        assert!(message.contains(part), "{message:?} does not mention {part:?}");
    }
    assert_eq!(reg.status().await, before, "a refused registration changed something");
}

#[tokio::test]
async fn instance_caps_refuse_new_instances_with_409_and_never_a_heartbeat_or_update() {
    let config = RegistryConfig::default().max_instances(5).max_instances_per_service(3);
    let reg = registry(config).await;
    for id in ["a", "b", "c"] {
        assert_eq!(reg.register(&instance("S", id)).await.0, StatusCode::OK);
    }
    // The service is full: a fourth instance is refused...
    assert_refused(
        &reg,
        &instance("S", "d"),
        StatusCode::CONFLICT,
        "service_full",
        &["\"S\"", "at most 3", "max_instances_per_service"],
    )
    .await;
    // ...but its instances heartbeat and update at the cap.
    assert_eq!(reg.heartbeat("S", "a").await, StatusCode::OK);
    let mut update = instance("S", "a");
    update["metadata"] = json!({"version": "2"});
    let index = reg.status().await["index"].as_u64().unwrap();
    let (status, answer) = reg.register(&update).await;
    assert_eq!((status, answer["index"].as_u64()), (StatusCode::OK, Some(index + 1)), "{answer}");

    // Five over all services: a sixth is refused, wherever it goes.
    for id in ["x", "y"] {
        assert_eq!(reg.register(&instance("T", id)).await.0, StatusCode::OK);
    }
    assert_refused(
        &reg,
        &instance("U", "z"),
        StatusCode::CONFLICT,
        "too_many_instances",
        &["at most 5", "max_instances"],
    )
    .await;
    assert_eq!(reg.register(&instance("T", "x")).await.0, StatusCode::OK, "re-registering at the cap");
    assert_eq!(reg.status().await["instances"], 5);

    // Room again once one goes.
    let resp = reg.http.delete(reg.url("/v1/instances/S/b")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(reg.register(&instance("U", "z")).await.0, StatusCode::OK);
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn metadata_past_its_cap_is_refused_with_413_and_at_the_cap_accepted() {
    let limit = 512;
    let reg = registry(RegistryConfig::default().max_metadata_bytes(limit)).await;
    // InstanceMeta and methods taking exactly `limit` bytes as JSON.
    let methods = vec!["S.Get".to_owned()];
    let mut metadata = InstanceMeta::default();
    metadata.kv.insert("blob".into(), String::new());
    let pad = limit - metadata_len(&metadata, &methods);
    metadata.kv.insert("blob".into(), "x".repeat(pad));
    assert_eq!(metadata_len(&metadata, &methods), limit);

    let mut at_cap = instance("S", "fits");
    at_cap["metadata"] = serde_json::to_value(&metadata).unwrap();
    at_cap["methods"] = json!(methods);
    assert_eq!(reg.register(&at_cap).await.0, StatusCode::OK);

    metadata.kv.insert("blob".into(), "x".repeat(pad + 1));
    let mut over = instance("S", "too-big");
    over["metadata"] = serde_json::to_value(&metadata).unwrap();
    over["methods"] = json!(methods);
    assert_refused(
        &reg,
        &over,
        StatusCode::PAYLOAD_TOO_LARGE,
        "metadata_too_large",
        &["513 bytes", "limit of 512", "max_metadata_bytes"],
    )
    .await;
    // An update past the cap is refused too, and leaves the record as it was.
    let mut grown = over.clone();
    grown["id"] = json!("fits");
    assert_refused(&reg, &grown, StatusCode::PAYLOAD_TOO_LARGE, "metadata_too_large", &["max_metadata_bytes"]).await;
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn addresses_no_caller_can_dial_are_refused_unless_allowed() {
    let reg = registry(RegistryConfig::default()).await;
    let cases = [
        ("0.0.0.0:9000", "unspecified"),
        ("[::]:9000", "unspecified"),
        ("224.0.0.251:5353", "multicast"),
        ("[ff02::1]:9000", "multicast"),
        ("169.254.169.254:80", "link-local"),
        ("[fe80::1]:9000", "link-local"),
        ("255.255.255.255:9000", "broadcast"),
    ];
    for (address, why) in cases {
        let mut body = instance("S", "i");
        body["address"] = json!(address);
        assert_refused(
            &reg,
            &body,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            &["`address`", address, why, "allow_unroutable_addresses"],
        )
        .await;
    }
    for address in ["127.0.0.1:9000", "[::1]:9000", "10.1.2.3:9000", "arith.local:9000"] {
        let mut body = instance("S", address.replace([':', '[', ']'], "_").as_str());
        body["address"] = json!(address);
        assert_eq!(reg.register(&body).await.0, StatusCode::OK, "{address}");
    }
    reg.handle.shutdown().await.unwrap();

    let reg = registry(RegistryConfig::default().allow_unroutable_addresses(true)).await;
    for (address, _) in cases {
        let mut body = instance("S", "i");
        body["address"] = json!(address);
        assert_eq!(reg.register(&body).await.0, StatusCode::OK, "{address} with allow_unroutable_addresses");
    }
    reg.handle.shutdown().await.unwrap();
}

fn ids(list: &Value) -> BTreeSet<String> {
    list["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn registrations_that_never_heartbeat_cannot_switch_self_preservation_on() {
    let config = RegistryConfig::default().sweep_interval(Duration::from_millis(50));
    let reg = registry(config).await;
    let short = |service: &str, id: &str| {
        let mut body = instance(service, id);
        body["ttl_ms"] = json!(1000);
        body
    };
    // Three live instances that heartbeat, and ten that never do.
    for id in ["live-1", "live-2", "live-3"] {
        assert_eq!(reg.register(&short("S", id)).await.0, StatusCode::OK);
    }
    for i in 0..10 {
        assert_eq!(reg.register(&short("S", &format!("ghost-{i}"))).await.0, StatusCode::OK);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the never-heartbeating instances were never evicted");
        for id in ["live-1", "live-2", "live-3"] {
            assert_eq!(reg.heartbeat("S", id).await, StatusCode::OK);
        }
        let status = reg.status().await;
        assert_eq!(status["self_preservation"], false, "10 of 13 silent, but none of them ever heartbeated");
        if status["instances"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, list) = reg.raw("/v1/services/S").await;
    let list: Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(ids(&list), ["live-1", "live-2", "live-3"].map(String::from).into());

    // A real partition still turns it on: the live ones stop together, and
    // they are kept while fresh never-heartbeating ones still go.
    for i in 0..10 {
        assert_eq!(reg.register(&short("S", &format!("ghost-{i}"))).await.0, StatusCode::OK);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "self-preservation never started, or the ghosts stayed");
        let status = reg.status().await;
        if status["self_preservation"] == true && status["instances"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, list) = reg.raw("/v1/services/S").await;
    let list: Value = serde_json::from_slice(&list).unwrap();
    let health: BTreeSet<&str> =
        list["instances"].as_array().unwrap().iter().map(|i| i["health"].as_str().unwrap()).collect();
    assert_eq!(health, ["expired"].into());
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn listings_never_pass_the_cap_and_discovery_follows_the_pages() {
    // A cap of 1024 + 4096 bytes: a few records per page.
    let config = RegistryConfig::default().max_listing_bytes(0).max_metadata_bytes(1024);
    let cap = config.listing_cap();
    assert_eq!(cap, 5120);
    let reg = registry(config).await;
    const N: usize = 300;
    for i in 0..N {
        let mut body = instance("Big", &format!("i{i:03}"));
        body["metadata"] = json!({"kv": {"blob": "x".repeat(300)}});
        assert_eq!(reg.register(&body).await.0, StatusCode::OK);
    }
    let client = RegistryClient::new(&reg.base).unwrap();
    let mut changes = BuiltinDiscover::new(client.clone()).discover("Big");

    // Raw pages: each under the cap, together every instance once.
    let mut seen = BTreeSet::new();
    let (mut path, mut pages, mut largest) = ("/v1/services/Big".to_owned(), 0, 0);
    loop {
        let (status, body) = reg.raw(&path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.len() <= cap, "a page of {} bytes, over the cap of {cap}", body.len());
        largest = largest.max(body.len());
        pages += 1;
        let page: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(page["reset"], pages == 1);
        let fresh = ids(&page);
        assert!(seen.is_disjoint(&fresh), "a record listed twice");
        seen.extend(fresh);
        if page["more"] == false {
            break;
        }
        path = format!("/v1/services/Big?index={}&epoch={}&wait=0s", page["index"], page["epoch"]);
    }
    println!("{N} instances in {pages} pages, the largest {largest} bytes (cap {cap})");
    assert_eq!(seen.len(), N);
    assert!(pages >= N * 400 / cap, "{pages} pages");
    assert_eq!(client.instances("Big").await.unwrap().instances.len(), N);

    // Discovery reports all of them, page by page.
    let mut known = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while known.len() < N {
        let batch = tokio::time::timeout_at(deadline.into(), changes.next()).await.unwrap().unwrap();
        for change in batch {
            match change {
                Change::Added(i) => assert!(known.insert(i.id), "added twice"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    // A blocking query woken by one change gets that change only.
    let index = client.instances("Big").await.unwrap().index;
    let watcher = {
        let (http, url) = (reg.http.clone(), reg.url(&format!("/v1/services/Big?index={index}&wait=10s")));
        tokio::spawn(async move { http.get(url).send().await.unwrap().bytes().await.unwrap() })
    };
    let resp = reg.http.delete(reg.url("/v1/instances/Big/i007")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let woke = watcher.await.unwrap();
    let woke_json: Value = serde_json::from_slice(&woke).unwrap();
    assert_eq!(woke_json["removed"], json!(["i007"]));
    assert_eq!(woke_json["instances"], json!([]));
    assert!(woke.len() < 200, "one removal took {} bytes", woke.len());
    let batch = tokio::time::timeout(Duration::from_secs(5), changes.next()).await.unwrap().unwrap();
    assert_eq!(batch, [Change::Removed("i007".into())]);
    reg.handle.shutdown().await.unwrap();
}
