//! Config keys over the HTTP API, on real sockets on 127.0.0.1:0: round
//! trips, refusals, limits and blocking queries.

mod common;

use std::time::{Duration, Instant};

use common::{registry, Registry};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchboard::config::MAX_VALUE_LEN;
use switchboard_registry::server::INDEX_HEADER;
use switchboard_registry::{RegistryClient, RegistryConfig};

/// Status, body as JSON, and the index header (if any).
type Answer = (StatusCode, Value, Option<u64>);

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let index = resp.headers().get(INDEX_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (status, resp.json().await.unwrap(), index)
}

impl Registry {
    async fn get(&self, path: &str) -> Answer {
        answer(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    async fn put(&self, key: &str, body: impl Into<reqwest::Body>) -> Answer {
        answer(self.http.put(self.url(&format!("/v1/config/{key}"))).body(body).send().await.unwrap()).await
    }

    async fn delete(&self, key: &str) -> Answer {
        answer(self.http.delete(self.url(&format!("/v1/config/{key}"))).send().await.unwrap()).await
    }

    fn index(&self) -> u64 {
        self.handle.store().index()
    }
}

#[tokio::test]
async fn put_get_list_delete_round_trip() {
    let reg = registry(RegistryConfig::default()).await;
    let value = "{\"zone\": \"eu-1\"}\nsecond line, ünïcödé";
    assert_eq!(reg.put("routing/Arith", value).await, (StatusCode::OK, json!({"index": 2}), None));
    assert_eq!(reg.put("routing/Echo", "e").await.1, json!({"index": 3}));
    assert_eq!(reg.put("plugins/list", "p").await.1, json!({"index": 4}));
    // The same value again is not a change: the key keeps its revision.
    assert_eq!(reg.put("routing/Arith", value).await.1, json!({"index": 2}));
    assert_eq!(reg.index(), 4);

    let (status, body, index) = reg.get("/v1/config/routing/Arith").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"key": "routing/Arith", "value": value, "revision": 2}));
    assert_eq!(index, Some(2), "the header carries the key's revision");

    let (status, body, index) = reg.get("/v1/config?prefix=routing/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"entries": [
            {"key": "routing/Arith", "value": value, "revision": 2},
            {"key": "routing/Echo", "value": "e", "revision": 3},
        ], "index": 4})
    );
    assert_eq!(index, Some(4), "a list is read at the global index");
    let all = reg.get("/v1/config").await.1;
    let keys: Vec<&str> = all["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["plugins/list", "routing/Arith", "routing/Echo"]);

    assert_eq!(reg.delete("routing/Echo").await, (StatusCode::OK, json!({"index": 5, "deleted": true}), None));
    assert_eq!(reg.delete("routing/Echo").await.1, json!({"index": 5, "deleted": false}));
    let (status, body, _) = reg.get("/v1/config/routing/Echo").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "unknown_key");
    assert!(body["error"].as_str().unwrap().contains("routing/Echo"), "{body}");
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_client_encodes_keys_and_reads_back_what_it_wrote() {
    let reg = registry(RegistryConfig::default()).await;
    let client = RegistryClient::new(&reg.base).unwrap();
    // Characters that mean something in a URL travel percent-encoded.
    let key = "plugins/x y?#%.wasm";
    let put = client.config_put(key, "v1").await.unwrap();
    let got = client.config_get(key).await.unwrap().unwrap();
    assert_eq!((got.key.as_str(), got.value.as_str(), got.revision), (key, "v1", put.index));
    assert_eq!(reg.handle.store().config_get(key).unwrap().map(|e| e.value), Some("v1".to_owned()));
    assert_eq!(client.config_get("plugins/none").await.unwrap(), None);
    let list = client.config_list("plugins/").await.unwrap();
    assert_eq!(list.entries, [got]);
    assert_eq!(list.index, reg.index());
    let deleted = client.config_delete(key).await.unwrap();
    assert!(deleted.deleted);
    assert!(!client.config_delete(key).await.unwrap().deleted);
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_keys_values_and_queries_are_refused_and_change_nothing() {
    let reg = registry(RegistryConfig::default()).await;
    reg.put("a/b", "1").await;
    let before = reg.index();

    // (`..` segments never reach the server: URL parsers resolve them.)
    for key in ["a//b", "a/", "%2Fetc/passwd", "a/%0Ab"] {
        let (status, body, _) = reg.put(key, "x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key}: {body}");
        assert_eq!(body["code"], "invalid_key", "{key}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("invalid config key")), "{body}");
    }
    let (status, body, _) = reg.get("/v1/config/a//b").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_key")));
    let (status, body, _) = reg.get("/v1/config?prefix=/a").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_key")));
    let (status, body, _) = reg.get("/v1/config?prefix=a/&index=1&wait=soon").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_query")));
    let (status, body, _) = reg.get("/v1/config?index=minus-one").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_query")));

    // Not UTF-8.
    let (status, body, _) = reg.put("a/b", vec![b'o', b'k', 0xff, 0xfe]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_value")), "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("not UTF-8")), "{body}");

    // Larger than the limit: refused; exactly the limit (well past the
    // 64 KiB of other request bodies) is fine.
    let (status, body, _) = reg.put("a/big", "x".repeat(MAX_VALUE_LEN + 1)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("value_too_large")), "{body}");
    assert_eq!(reg.index(), before, "every refusal left the store alone");
    assert_eq!(reg.handle.store().config_get("a/b").unwrap().map(|e| e.value), Some("1".to_owned()));

    let (status, body, _) = reg.put("a/big", "x".repeat(MAX_VALUE_LEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(reg.handle.store().config_get("a/big").unwrap().map(|e| e.value.len()), Some(MAX_VALUE_LEN));
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_key_and_byte_limits_answer_409() {
    let reg = registry(RegistryConfig::default().max_config_keys(2).max_config_bytes(100)).await;
    assert_eq!(reg.put("k1", "a").await.0, StatusCode::OK);
    assert_eq!(reg.put("k2", "b").await.0, StatusCode::OK);
    let (status, body, _) = reg.put("k3", "c").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("too_many_keys")), "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("at most 2")), "{body}");
    let (status, body, _) = reg.put("k1", "x".repeat(100)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("config_full")), "{body}");
    assert_eq!(reg.put("k1", "changing an existing key is fine").await.0, StatusCode::OK);
    assert_eq!(reg.handle.store().config_len(), 2);
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_query_answers_on_a_change_under_its_prefix_only() {
    let reg = registry(RegistryConfig::default()).await;
    reg.put("a/1", "x").await;
    reg.put("a/2", "y").await;
    let (_, list, index) = reg.get("/v1/config?prefix=a/").await;
    let seen = list["index"].as_u64().unwrap();
    assert_eq!(index, Some(seen));

    let watcher = {
        let (http, url) = (reg.http.clone(), reg.url(&format!("/v1/config?prefix=a/&index={seen}&wait=20s")));
        tokio::spawn(async move {
            let resp = http.get(url).send().await.unwrap();
            (Instant::now(), answer(resp).await)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A change elsewhere (another prefix, an instance) does not answer it.
    reg.put("b/1", "z").await;
    let instance = json!({"service": "S", "id": "i", "address": "127.0.0.1:9000"});
    assert_eq!(reg.http.put(reg.url("/v1/instances")).json(&instance).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watcher.is_finished(), "a change outside a/ answered a blocking query on a/");

    // A delete under a/ does, at once, with the list after it.
    let deleted_at = Instant::now();
    let (_, deleted, _) = reg.delete("a/1").await;
    let (answered_at, (status, body, index)) = watcher.await.unwrap();
    let latency = answered_at.duration_since(deleted_at);
    assert!(latency < Duration::from_millis(500), "took {latency:?}");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["entries"], json!([{"key": "a/2", "value": "y", "revision": 3}]));
    assert_eq!(body["index"], deleted["index"]);
    assert_eq!(index, deleted["index"].as_u64());
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_query_times_out_with_the_same_index_and_a_later_change_is_not_missed() {
    let reg = registry(RegistryConfig::default()).await;
    reg.put("a/1", "x").await;
    let seen = reg.get("/v1/config?prefix=a/").await.1["index"].as_u64().unwrap();

    let began = Instant::now();
    let (status, body, _) = reg.get(&format!("/v1/config?prefix=a/&index={seen}&wait=300ms")).await;
    let took = began.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(body["index"], seen, "nothing changed: the same index");
    assert_eq!(body["entries"].as_array().map(Vec::len), Some(1));

    // A change made between two polls: the next poll from `seen` answers at once.
    reg.put("a/1", "changed").await;
    let began = Instant::now();
    let (_, body, _) = reg.get(&format!("/v1/config?prefix=a/&index={seen}&wait=20s")).await;
    assert!(began.elapsed() < Duration::from_secs(2));
    assert_eq!(body["entries"][0]["value"], "changed");

    // An index from an earlier life of the registry answers at once.
    let began = Instant::now();
    let (_, body, _) = reg.get("/v1/config?prefix=a/&index=1000000&wait=20s").await;
    assert!(began.elapsed() < Duration::from_secs(2));
    assert_eq!(body["index"], reg.index());
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_a_waiting_config_query_at_once() {
    let reg = registry(RegistryConfig::default()).await;
    reg.put("a/1", "x").await;
    let seen = reg.index();
    let url = reg.url(&format!("/v1/config?prefix=a/&index={seen}&wait=60s"));
    let http = reg.http.clone();
    let watcher = tokio::spawn(async move { answer(http.get(url).send().await.unwrap()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    reg.handle.shutdown().await.unwrap();
    let (status, body, _) = watcher.await.unwrap();
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!((status, body["index"].as_u64()), (StatusCode::OK, Some(seen)));
}
