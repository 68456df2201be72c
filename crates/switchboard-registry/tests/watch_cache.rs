//! Blocking-query answers are encoded once per change and shared by the
//! watchers it wakes; the sharing must never serve stale content: not across
//! a change, not in plain GETs, not to a query that did not wait.

mod common;

use std::time::Duration;

use common::{registry, Registry};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use switchboard_registry::model::ServiceChanges;
use switchboard_registry::server::INDEX_HEADER;
use switchboard_registry::RegistryConfig;
use tokio::task::JoinHandle;

/// What one GET of a service listing returned.
struct Answer {
    index_header: u64,
    content_type: String,
    body: axum::body::Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn changes(&self) -> ServiceChanges {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The records the answer carries (what changed, or all on a reset).
    fn ids(&self) -> Vec<String> {
        self.changes().instances.into_iter().map(|i| i.id).collect()
    }

    fn heartbeat_ms(&self, id: &str) -> u64 {
        let json = self.json();
        let instance = json["instances"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap();
        instance["last_heartbeat_ms"].as_u64().unwrap()
    }
}

async fn get(http: &Client, url: &str) -> Answer {
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let index_header = resp.headers()[INDEX_HEADER].to_str().unwrap().parse().unwrap();
    let content_type = resp.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_owned();
    let body = resp.bytes().await.unwrap();
    Answer { index_header, content_type, body }
}

impl Registry {
    async fn register(&self, id: &str, port: u16) -> u64 {
        let body = json!({
            "service": "Arith",
            "id": id,
            "address": format!("127.0.0.1:{port}"),
            "metadata": {"version": "1.2.0", "zone": "eu-1", "tags": ["blue"], "kv": {"k": "v"}},
            "methods": ["Arith.Multiply"],
            "ttl_ms": 3_600_000,
        });
        let resp = self.http.put(self.url("/v1/instances")).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().await.unwrap()["index"].as_u64().unwrap()
    }

    async fn list(&self) -> Answer {
        get(&self.http, &self.url("/v1/services/Arith")).await
    }

    async fn blocking(&self, index: u64) -> Answer {
        get(&self.http, &self.url(&format!("/v1/services/Arith?index={index}&wait=10s"))).await
    }

    /// A blocking query on a task, parked before this returns.
    async fn watcher(&self, index: u64) -> JoinHandle<Answer> {
        let (http, url) = (self.http.clone(), self.url(&format!("/v1/services/Arith?index={index}&wait=10s")));
        let task = tokio::spawn(async move { get(&http, &url).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!task.is_finished(), "the query must block while nothing changes");
        task
    }
}

/// The shape every answer must have: the header matches the body's index,
/// and the body is exactly what serde gives for the list it holds.
fn assert_well_formed(answer: &Answer) {
    assert_eq!(answer.content_type, "application/json");
    let list = answer.changes();
    assert_eq!(answer.index_header, list.index);
    assert_eq!(serde_json::to_vec(&list).unwrap(), answer.body, "byte for byte the plain JSON encoding");
}

#[tokio::test]
async fn shared_answers_follow_every_change_and_heartbeats_show_in_fresh_answers() {
    // A 1 s default TTL ends the warm-up after 1 s (the instances ask for 1 h).
    let ttl = Duration::from_secs(1);
    let reg = registry(RegistryConfig::default().default_ttl(ttl)).await;
    let seen = reg.register("a1", 9001).await;
    tokio::time::sleep(ttl).await;
    assert!(reg.list().await.json().get("warming_up_ms").is_none(), "warm");

    // Change A: both watchers get the same bytes, holding just the change.
    let (w1, w2) = (reg.watcher(seen).await, reg.watcher(seen).await);
    let a = reg.register("a2", 9002).await;
    let (w1, w2) = (w1.await.unwrap(), w2.await.unwrap());
    assert_well_formed(&w1);
    assert_eq!(w1.body, w2.body);
    assert_eq!(w1.index_header, a);
    assert_eq!(w1.ids(), ["a2"]);
    assert!(!w1.changes().reset);

    // A heartbeat does not change the index, but a plain GET shows it at once,
    // and so does a blocking query that did not have to wait.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let resp = reg.http.put(reg.url("/v1/instances/Arith/a2/heartbeat")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let plain = reg.list().await;
    assert_well_formed(&plain);
    assert_eq!(plain.index_header, a);
    assert_eq!(plain.ids(), ["a1", "a2"]);
    assert!(plain.heartbeat_ms("a2") > w1.heartbeat_ms("a2"), "plain GETs are built fresh");
    let at_once = reg.blocking(seen).await;
    assert_well_formed(&at_once);
    assert_eq!((at_once.index_header, at_once.ids()), (a, vec!["a2".to_owned()]));
    assert_eq!(at_once.heartbeat_ms("a2"), plain.heartbeat_ms("a2"), "only parked queries share an encoding");

    // Change B, right after A's encoding was shared: the watcher gets B, not A.
    let w3 = reg.watcher(a).await;
    let b = reg.register("a3", 9003).await;
    let w3 = w3.await.unwrap();
    assert_well_formed(&w3);
    assert_eq!((w3.index_header, w3.ids()), (b, vec!["a3".to_owned()]));
    let caught_up = reg.blocking(a).await; // a watcher that was busy during B
    assert_eq!((caught_up.index_header, caught_up.ids()), (b, w3.ids()));
    let behind = reg.blocking(seen).await; // one that missed A too
    assert_eq!((behind.index_header, behind.ids()), (b, vec!["a2".to_owned(), "a3".to_owned()]));

    // A removal is a change too.
    let w4 = reg.watcher(b).await;
    let resp = reg.http.delete(reg.url("/v1/instances/Arith/a2")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let w4 = w4.await.unwrap();
    assert_well_formed(&w4);
    assert!(w4.index_header > b);
    assert_eq!((w4.ids(), w4.changes().removed), (Vec::<String>::new(), vec!["a2".to_owned()]));
    assert_eq!(reg.list().await.ids(), ["a1", "a3"]);
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn shared_answers_during_warm_up_carry_the_current_countdown() {
    let reg = registry(RegistryConfig::default()).await; // warming up for 6 s
    let seen = reg.register("a1", 9001).await;
    let watchers = [reg.watcher(seen).await, reg.watcher(seen).await];
    let changed = reg.register("a2", 9002).await;
    let mut countdowns = Vec::new();
    let mut bodies = Vec::new();
    for watcher in watchers {
        let answer = watcher.await.unwrap();
        assert_well_formed(&answer);
        assert_eq!((answer.index_header, answer.ids()), (changed, vec!["a2".to_owned()]));
        countdowns.push(answer.json()["warming_up_ms"].as_u64().unwrap());
        let mut json = answer.json();
        json.as_object_mut().unwrap().remove("warming_up_ms");
        bodies.push(json);
    }
    assert_eq!(bodies[0], bodies[1], "one page, each with its own countdown");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = reg.blocking(seen).await;
    assert_well_formed(&again);
    let left = again.json()["warming_up_ms"].as_u64().unwrap();
    assert!(left > 0 && countdowns.iter().all(|&c| c <= 6000 && left < c), "{left} after {countdowns:?}");
    reg.handle.shutdown().await.unwrap();
}
