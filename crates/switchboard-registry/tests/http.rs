//! The HTTP API over real sockets on 127.0.0.1:0.

mod common;

use std::time::{Duration, Instant};

use common::{registry, Registry};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchboard_registry::RegistryConfig;

impl Registry {
    /// GET `path`, without the warm-up countdown (it moves on its own;
    /// `warm_up_is_announced_for_one_ttl` checks it).
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, mut body) = self.get_raw(path).await;
        body.as_object_mut().map(|o| o.remove("warming_up_ms"));
        (status, body)
    }

    async fn get_raw(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    async fn register(&self, body: Value) -> (StatusCode, Value) {
        let resp = self.http.put(self.url("/v1/instances")).json(&body).send().await.unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    async fn heartbeat(&self, service: &str, id: &str) -> (StatusCode, Value) {
        let resp = self.http.put(self.url(&format!("/v1/instances/{service}/{id}/heartbeat"))).send().await.unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    async fn index(&self) -> u64 {
        self.get("/v1/status").await.1["index"].as_u64().unwrap()
    }
}

fn instance(service: &str, id: &str, port: u16) -> Value {
    json!({
        "service": service,
        "id": id,
        "address": format!("127.0.0.1:{port}"),
        "metadata": {"version": "1.2.0", "zone": "eu-1", "tags": ["blue"], "kv": {"k": "v"}},
        "methods": [format!("{service}.Multiply")],
    })
}

fn ids(list: &Value) -> Vec<&str> {
    list["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn register_list_heartbeat_deregister() {
    let reg = registry(RegistryConfig::default()).await;
    assert_eq!(reg.register(instance("Arith", "a2", 9002)).await, (StatusCode::OK, json!({"index": 2})));
    assert_eq!(reg.register(instance("Arith", "a1", 9001)).await, (StatusCode::OK, json!({"index": 3})));
    assert_eq!(reg.register(instance("Echo", "e1", 9003)).await.0, StatusCode::OK);

    let (status, services) = reg.get("/v1/services").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(services["index"], 4);
    assert_eq!(services["self_preservation"], false);
    let names: Vec<_> =
        services["services"].as_array().unwrap().iter().map(|s| (s["name"].clone(), s["instances"].clone())).collect();
    assert_eq!(names, [(json!("Arith"), json!(2)), (json!("Echo"), json!(1))]);

    let resp = reg.http.get(reg.url("/v1/services/Arith")).send().await.unwrap();
    assert_eq!(resp.headers()["x-switchboard-index"], "3");
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list["index"], 3);
    assert_eq!(ids(&list), ["a1", "a2"]);
    let a1 = &list["instances"][0];
    assert_eq!(a1["address"], "127.0.0.1:9001");
    assert_eq!(
        a1["metadata"],
        json!({"version": "1.2.0", "weight": 100, "zone": "eu-1", "tags": ["blue"], "kv": {"k": "v"}})
    );
    assert_eq!(a1["methods"], json!(["Arith.Multiply"]));
    assert_eq!(a1["ttl_ms"], 6000);
    assert_eq!(a1["health"], "passing");
    assert!(a1["registered_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(a1["last_heartbeat_ms"].as_u64().unwrap() >= a1["registered_at_ms"].as_u64().unwrap());

    assert_eq!(reg.heartbeat("Arith", "a1").await, (StatusCode::OK, json!({"index": 4})));
    let (status, body) = reg.heartbeat("Arith", "ghost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "unknown_instance");
    assert!(body["error"].as_str().unwrap().contains("ghost"), "{body}");

    let resp = reg.http.delete(reg.url("/v1/instances/Arith/a1")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"index": 5}));
    let resp = reg.http.delete(reg.url("/v1/instances/Arith/a1")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "unknown_instance");
    assert_eq!(ids(&reg.get("/v1/services/Arith").await.1), ["a2"]);

    // Unknown service: 200 with an empty list (it may appear later).
    let (status, mut nobody) = reg.get("/v1/services/Nobody").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(nobody.as_object_mut().unwrap().remove("epoch"), Some(json!(reg.handle.store().epoch())));
    assert_eq!(nobody, json!({"index": 0, "reset": true, "more": false, "instances": [], "removed": []}));

    let (_, status) = reg.get("/v1/status").await;
    assert_eq!(
        status,
        json!({"index": 5, "instances": 2, "self_preservation": false, "ttl_ms": 6000, "heartbeat_ms": 2000})
    );
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
/// Woken by the change itself, not by its 20 s wait running out or by a
/// poll: the bound is loose (1 s after the change was acknowledged) so a
/// loaded machine cannot fail it; how fast the wake is belongs to the
/// propagation measurement (examples/propagation.rs), not to a timed test.
async fn blocking_query_wakes_on_a_change_not_at_the_end_of_its_wait() {
    let reg = registry(RegistryConfig::default()).await;
    reg.register(instance("Arith", "a1", 9001)).await;
    let (_, list) = reg.get("/v1/services/Arith").await;
    let seen = list["index"].as_u64().unwrap();

    let url = reg.url(&format!("/v1/services/Arith?index={seen}&wait=20s"));
    let http = reg.http.clone();
    let started = Instant::now();
    let watcher = tokio::spawn(async move {
        let resp = http.get(url).send().await.unwrap();
        let at = Instant::now();
        (resp.json::<Value>().await.unwrap(), at)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watcher.is_finished(), "the query must block while nothing changes");

    let changed = Instant::now();
    reg.register(instance("Arith", "a2", 9002)).await;
    let acknowledged = Instant::now();
    let (list, woke) = tokio::time::timeout(Duration::from_secs(5), watcher).await.unwrap().unwrap();
    println!(
        "blocking query woke {:?} after the change (blocked {:?})",
        woke.duration_since(changed),
        changed - started
    );
    let after_ack = woke.saturating_duration_since(acknowledged);
    assert!(after_ack < Duration::from_secs(1), "woke {after_ack:?} after the change was acknowledged");
    assert!(list["index"].as_u64().unwrap() > seen);
    assert_eq!(ids(&list), ["a2"], "only what changed after the index passed");
    assert_eq!((&list["reset"], &list["more"]), (&json!(false), &json!(false)));
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn blocking_query_times_out_with_the_same_index() {
    let reg = registry(RegistryConfig::default()).await;
    reg.register(instance("Arith", "a1", 9001)).await;
    let start = Instant::now();
    let (status, list) = reg.get("/v1/services/Arith?index=2&wait=300ms").await;
    let waited = start.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["index"], 2);
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_watcher_passing_its_last_index_never_misses_a_change() {
    let reg = registry(RegistryConfig::default()).await;

    // Deterministic case: the change lands while the watcher is not polling.
    reg.register(instance("Arith", "a0", 9000)).await;
    let seen = reg.get("/v1/services/Arith").await.1["index"].as_u64().unwrap();
    reg.register(instance("Arith", "between", 9999)).await;
    let start = Instant::now();
    let (_, list) = reg.get(&format!("/v1/services/Arith?index={seen}&wait=30s")).await;
    assert!(start.elapsed() < Duration::from_secs(2), "must answer at once, not wait 30 s");
    assert!(ids(&list).contains(&"between"));
    let resp = reg.http.delete(reg.url("/v1/instances/Arith/between")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Concurrent case: a writer registers 40 instances at irregular moments
    // while a slow watcher (it "works" 3 ms after each answer) long-polls.
    const N: u16 = 40;
    let writer = {
        let (http, url) = (reg.http.clone(), reg.url("/v1/instances"));
        tokio::spawn(async move {
            for i in 1..=N {
                let resp = http.put(&url).json(&instance("Arith", &format!("w{i:02}"), 9000 + i)).send().await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(u64::from(i % 4) * 2)).await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut index = 0;
    let mut polls = 0;
    // The watcher's view: each answer holds what changed since the last one.
    let mut view = std::collections::BTreeSet::new();
    loop {
        assert!(Instant::now() < deadline, "watcher did not see all {N} registrations in time");
        let (_, list) = reg.get(&format!("/v1/services/Arith?index={index}&wait=5s")).await;
        polls += 1;
        let new_index = list["index"].as_u64().unwrap();
        assert!(new_index > index, "a blocking query returned without a change: {index} -> {new_index}");
        assert_eq!(list["reset"], index == 0, "only the first answer is a full listing");
        index = new_index;
        for gone in list["removed"].as_array().unwrap() {
            view.remove(gone.as_str().unwrap());
        }
        view.extend(ids(&list).into_iter().map(str::to_owned));
        if view.iter().filter(|id| id.starts_with('w')).count() == usize::from(N) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(view.len(), usize::from(N) + 1, "{view:?}"); // the w's and a0; "between" went
    writer.await.unwrap();
    println!("watcher saw all {N} registrations in {polls} polls");
    assert_eq!(index, reg.index().await, "the last answer carried the final index");
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn ttl_eviction_over_http() {
    let config = RegistryConfig::default().sweep_interval(Duration::from_millis(50));
    let reg = registry(config).await;
    for id in ["silent", "beating"] {
        let mut body = instance("Arith", id, 9000);
        body["ttl_ms"] = json!(1000);
        assert_eq!(reg.register(body).await.0, StatusCode::OK);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "the silent instance was never evicted");
        assert_eq!(reg.heartbeat("Arith", "beating").await.0, StatusCode::OK);
        if ids(&reg.get("/v1/services/Arith").await.1) == ["beating"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = reg.heartbeat("Arith", "silent").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_instance")));
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn self_preservation_is_visible_in_the_api() {
    let config = RegistryConfig::default().sweep_interval(Duration::from_millis(50));
    let reg = registry(config).await;
    for id in ["a", "b", "c", "d"] {
        let mut body = instance("Arith", id, 9000);
        body["ttl_ms"] = json!(1000);
        reg.register(body).await;
    }
    // All four were alive (self-preservation counts only instances that
    // heartbeated since they registered: tests/limits.rs shows why)...
    for id in ["a", "b", "c", "d"] {
        assert_eq!(reg.heartbeat("Arith", id).await.0, StatusCode::OK);
    }
    // ...then only "a" keeps heartbeating: 3 of 4 stop together. Self-preservation
    // starts as they approach their TTL, and nobody is ever evicted; once
    // their TTL has passed they are listed as expired.
    let deadline = Instant::now() + Duration::from_secs(5);
    let want = [json!("passing"), json!("expired"), json!("expired"), json!("expired")];
    loop {
        assert!(Instant::now() < deadline, "self-preservation never started");
        reg.heartbeat("Arith", "a").await;
        let list = reg.get("/v1/services/Arith").await.1;
        assert_eq!(ids(&list), ["a", "b", "c", "d"], "nothing may be evicted");
        let health: Vec<_> = list["instances"].as_array().unwrap().iter().map(|i| i["health"].clone()).collect();
        if health == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reg.get("/v1/services").await.1["self_preservation"], true);
    assert_eq!(reg.get("/v1/status").await.1["self_preservation"], true);

    // Heartbeats return for b and c; d stays dead and is evicted once the mode ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "self-preservation never ended");
        for id in ["a", "b", "c"] {
            assert_eq!(reg.heartbeat("Arith", id).await.0, StatusCode::OK);
        }
        let services = reg.get("/v1/services").await.1;
        if services["self_preservation"] == false && ids(&reg.get("/v1/services/Arith").await.1) == ["a", "b", "c"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reg.handle.shutdown().await.unwrap();
}

/// Sends a raw request; returns status and the parsed JSON body (which every
/// error must have).
async fn send(reg: &Registry, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> (StatusCode, Value) {
    let mut req = reg.http.request(method, reg.url(path)).header("content-type", "application/json");
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {text}"));
    (status, json)
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_and_change_nothing() {
    use reqwest::Method;
    let reg = registry(RegistryConfig::default()).await;
    reg.register(instance("Arith", "a1", 9001)).await;
    let index = reg.index().await;
    let before = reg.get("/v1/services/Arith").await.1;

    let with = |patch: Value| {
        let mut body = instance("Arith", "a1", 9100); // would change a1's address if accepted
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        Some(serde_json::to_vec(&body).unwrap())
    };
    let without = |field: &str| {
        let mut body = instance("Arith", "new", 9100);
        body.as_object_mut().unwrap().remove(field);
        Some(serde_json::to_vec(&body).unwrap())
    };
    let huge = {
        let mut body = instance("Arith", "new", 9100);
        body["metadata"]["kv"]["blob"] = json!("x".repeat(100 * 1024));
        Some(serde_json::to_vec(&body).unwrap())
    };

    let put = Method::PUT;
    /// (name, method, path, body, expected status, text the message must contain)
    type Case = (&'static str, Method, &'static str, Option<Vec<u8>>, StatusCode, &'static str);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            put.clone(),
            "/v1/instances",
            Some(b"{\"service\": ".to_vec()),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "not JSON at all",
            put.clone(),
            "/v1/instances",
            Some(b"hello".to_vec()),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        ("empty body", put.clone(), "/v1/instances", None, StatusCode::BAD_REQUEST, "not valid JSON"),
        (
            "missing service",
            put.clone(),
            "/v1/instances",
            without("service"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `service`",
        ),
        (
            "missing id",
            put.clone(),
            "/v1/instances",
            without("id"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `id`",
        ),
        (
            "missing address",
            put.clone(),
            "/v1/instances",
            without("address"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `address`",
        ),
        (
            "wrong type",
            put.clone(),
            "/v1/instances",
            with(json!({"metadata": {"weight": "heavy"}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid type",
        ),
        (
            "array body",
            put.clone(),
            "/v1/instances",
            Some(b"[]".to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected",
        ),
        ("TTL too short", put.clone(), "/v1/instances", with(json!({"ttl_ms": 10})), StatusCode::BAD_REQUEST, "ttl_ms"),
        (
            "TTL too long",
            put.clone(),
            "/v1/instances",
            with(json!({"ttl_ms": 7_200_000})),
            StatusCode::BAD_REQUEST,
            "ttl_ms",
        ),
        (
            "negative TTL",
            put.clone(),
            "/v1/instances",
            with(json!({"ttl_ms": -5})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ttl_ms",
        ),
        (
            "empty service",
            put.clone(),
            "/v1/instances",
            with(json!({"service": ""})),
            StatusCode::BAD_REQUEST,
            "`service`",
        ),
        ("empty id", put.clone(), "/v1/instances", with(json!({"id": ""})), StatusCode::BAD_REQUEST, "`id`"),
        (
            "empty address",
            put.clone(),
            "/v1/instances",
            with(json!({"address": ""})),
            StatusCode::BAD_REQUEST,
            "`address`",
        ),
        (
            "address without port",
            put.clone(),
            "/v1/instances",
            with(json!({"address": "10.0.0.1"})),
            StatusCode::BAD_REQUEST,
            "`address`",
        ),
        (
            "address with bad port",
            put.clone(),
            "/v1/instances",
            with(json!({"address": "host:70000"})),
            StatusCode::BAD_REQUEST,
            "`address`",
        ),
        (
            "slash in service",
            put.clone(),
            "/v1/instances",
            with(json!({"service": "a/b"})),
            StatusCode::BAD_REQUEST,
            "`service`",
        ),
        ("body over 64 KiB", put.clone(), "/v1/instances", huge, StatusCode::PAYLOAD_TOO_LARGE, "length limit"),
        ("unknown route", Method::GET, "/v2/whatever", None, StatusCode::NOT_FOUND, "no route for GET /v2/whatever"),
        ("wrong method", Method::POST, "/v1/instances", with(json!({})), StatusCode::METHOD_NOT_ALLOWED, "POST"),
        (
            "heartbeat unknown",
            put.clone(),
            "/v1/instances/Arith/ghost/heartbeat",
            None,
            StatusCode::NOT_FOUND,
            "register it again",
        ),
        ("deregister unknown", Method::DELETE, "/v1/instances/Arith/ghost", None, StatusCode::NOT_FOUND, "ghost"),
        ("bad wait", Method::GET, "/v1/services/Arith?index=1&wait=soon", None, StatusCode::BAD_REQUEST, "`wait`"),
        ("bad index", Method::GET, "/v1/services/Arith?index=abc", None, StatusCode::BAD_REQUEST, "index"),
    ];
    for (name, method, path, body, want_status, want_text) in cases {
        let (status, json) = send(&reg, method, path, body).await;
        assert_eq!(status, want_status, "{name}: {json}");
        let message = json["error"].as_str().unwrap_or_else(|| panic!("{name}: no error message: {json}"));
        assert!(message.contains(want_text), "{name}: {message:?} does not mention {want_text:?}");
        assert!(json["code"].is_string(), "{name}: no code: {json}");
        assert_eq!(reg.index().await, index, "{name} changed the index");
    }
    assert_eq!(reg.get("/v1/services/Arith").await.1, before, "a1 unchanged");
    assert_eq!(reg.handle.store().status().instances, 1);
    reg.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_answers_waiting_blocking_queries() {
    let reg = registry(RegistryConfig::default()).await;
    reg.register(instance("Arith", "a1", 9001)).await;
    let url = reg.url("/v1/services/Arith?index=2&wait=5m");
    let http = reg.http.clone();
    let watcher = tokio::spawn(async move { http.get(url).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!watcher.is_finished());
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), reg.handle.shutdown()).await.unwrap().unwrap();
    assert_eq!(watcher.await.unwrap(), StatusCode::OK);
    assert!(start.elapsed() < Duration::from_secs(2), "shutdown took {:?}", start.elapsed());
}

#[tokio::test]
async fn warm_up_is_announced_for_one_ttl() {
    let ttl = Duration::from_millis(1000);
    let reg = registry(RegistryConfig::default().default_ttl(ttl)).await;
    for path in ["/v1/services", "/v1/services/Arith", "/v1/status"] {
        let left = reg.get_raw(path).await.1["warming_up_ms"].as_u64().unwrap_or(0);
        assert!(left > 0 && left <= 1000, "{path}: warming_up_ms = {left}");
    }
    tokio::time::sleep(ttl).await;
    for path in ["/v1/services", "/v1/services/Arith", "/v1/status"] {
        let body = reg.get_raw(path).await.1;
        assert!(body.get("warming_up_ms").is_none(), "{path}: still warming up after the TTL: {body}");
    }
}
