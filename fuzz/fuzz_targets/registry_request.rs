//! The built-in registry's request parsing, as its HTTP server does it:
//! `PUT /v1/instances` bodies (`parse_json` into `RegisterRequest`, then
//! validation and the store) and blocking queries' `wait=` values, through
//! `switchboard_registry::fuzzing`.
//!
//! Input: `[selector, bytes...]`: an even selector fuzzes a register body,
//! an odd one a `wait=` value.
//!
//! Invariants:
//! - nothing panics; refusals are 400 (bad JSON) or 422 (bad shape);
//! - the server's parser accepts exactly what `serde_json::from_slice`
//!   accepts, with the same result;
//! - a parsed request re-serializes to JSON that parses to the same
//!   request;
//! - the store registers exactly the requests `validate` accepts whose
//!   address a caller can dial (`model::unroutable`) and whose metadata is
//!   within the per-record cap; what it
//!   stores is what was sent, its listing survives a JSON round trip (the
//!   client's parse), registering again unchanged does not bump the index,
//!   and deregistering removes it;
//! - an accepted `wait=` is digits and a known unit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_registry::config::RegistryConfig;
use switchboard_registry::fuzzing::{parse_register, parse_wait};
use switchboard_registry::model::{unroutable, InstanceList, RegisterRequest, MAX_NAME_LEN};
use switchboard_registry::store::{Store, StoreError};

fn register(body: &[u8]) {
    let parsed = parse_register(body);
    let plain = serde_json::from_slice::<RegisterRequest>(body);
    match (&parsed, &plain) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(status), Err(_)) => assert!(matches!(status, 400 | 422), "status {status}"),
        _ => panic!("parse_json and serde_json disagree: {parsed:?} / {plain:?}"),
    }
    let Ok(req) = parsed else { return };
    let json = serde_json::to_vec(&req).expect("a request serializes");
    assert_eq!(parse_register(&json).as_ref(), Ok(&req), "JSON round trip");

    // The store's rules: a valid request, an address a caller can dial
    // (the default config refuses unspecified, multicast and link-local
    // ones), metadata within the per-record cap.
    let valid = req.validate();
    let dialable = unroutable(&req.address);
    let store = Store::new(RegistryConfig::default());
    let index = match (store.register(req.clone()), &valid, dialable) {
        (Ok(index), Ok(()), None) => index,
        (Err(_), Err(_), _) => return,
        (Err(StoreError::Invalid(e)), Ok(()), Some(_)) if e.to_string().contains("callers cannot dial it") => return,
        (Err(StoreError::MetadataTooLarge { .. }), Ok(()), None) => return,
        (got, _, _) => panic!("store {got:?} but validate {valid:?}, unroutable {dialable:?}"),
    };
    for name in [&req.service, &req.id] {
        assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
        assert!(!name.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control()), "{name:?}");
    }
    let (_, port) = req.address.rsplit_once(':').expect("a valid address has a port");
    assert!(port.parse::<u16>().is_ok_and(|p| p != 0), "{:?}", req.address);

    let list = store.instances(&req.service);
    let [instance] = &list.instances[..] else { panic!("{} instances after one registration", list.instances.len()) };
    assert_eq!(
        (&instance.service, &instance.id, &instance.address, &instance.metadata, &instance.methods),
        (&req.service, &req.id, &req.address, &req.metadata, &req.methods)
    );
    let listed = serde_json::to_vec(&list).expect("a listing serializes");
    assert_eq!(serde_json::from_slice::<InstanceList>(&listed).expect("the client parses it"), list);
    assert_eq!(store.register(req.clone()).expect("again"), index, "an unchanged registration bumped the index");
    store.deregister(&req.service, &req.id).expect("deregisters");
    assert!(store.instances(&req.service).instances.is_empty());
}

fn wait(text: &[u8]) {
    let Ok(text) = std::str::from_utf8(text) else { return };
    match parse_wait(text) {
        Ok(_) => {
            let digits = text.bytes().take_while(u8::is_ascii_digit).count();
            assert!(digits > 0, "{text:?}");
            assert!(matches!(&text[digits..], "" | "ms" | "s" | "m" | "h"), "{text:?}");
        }
        Err(status) => assert_eq!(status, 400),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    if selector & 1 == 0 {
        register(rest);
    } else {
        wait(rest);
    }
});
