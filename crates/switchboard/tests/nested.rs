//! Calls made inside a handler, over real sockets: which of the handler's
//! request metadata travels on to the downstream call.

use std::sync::Arc;

use switchboard::balance::Balanced;
use switchboard::discovery::Static;
use switchboard::server::handler_fn;
use switchboard::{CallOptions, Channel, Client, Context, Server, Status};

async fn serve(server: Server) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(server.serve(listener));
    addr
}

/// `Echo.Seen` answers the metadata value of the key it is given, as the
/// downstream saw it.
async fn downstream() -> String {
    let server = Server::builder().build();
    server
        .router()
        .add_method(
            "Echo.Seen",
            handler_fn(|key: String| async move {
                let ctx = Context::current().expect("inside a handler");
                Ok::<_, Status>(ctx.metadata().get(&key).map(str::to_owned))
            }),
        )
        .expect("register");
    serve(server).await
}

/// `Up.Ask` asks the downstream, through `channel`, what it saw for a key.
async fn upstream<C: Channel + Clone + Send + Sync + 'static>(channel: C) -> String {
    let server = Server::builder().build();
    server
        .router()
        .add_method(
            "Up.Ask",
            handler_fn(move |key: String| {
                let channel = channel.clone();
                async move { Ok::<Option<String>, Status>(channel.call("Echo.Seen", &key).await?) }
            }),
        )
        .expect("register");
    serve(server).await
}

async fn seen(up: &Client, key: &str) -> Option<String> {
    let opts = CallOptions::new().metadata("tenant", "acme").metadata("authorization", "Bearer hop-one");
    up.call_with("Up.Ask", &key, &opts).await.expect("call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_listed_metadata_keys_travel_to_a_nested_call() {
    let down = downstream().await;

    // Listed: the tenant travels; the credential for the first hop does not.
    let forwarding = Client::builder(down.clone()).forward_metadata(["tenant"]).build();
    let up = Client::builder(upstream(forwarding).await).build();
    assert_eq!(seen(&up, "tenant").await.as_deref(), Some("acme"));
    assert_eq!(seen(&up, "authorization").await, None, "not listed, not forwarded");

    // Not listed: nothing travels.
    let plain = Client::builder(down.clone()).build();
    let up = Client::builder(upstream(plain).await).build();
    assert_eq!(seen(&up, "tenant").await, None);

    // The same through a balanced channel.
    let balanced =
        Balanced::builder("Echo", Arc::new(Static::new([down.clone()]))).forward_metadata(["tenant"]).build();
    let up = Client::builder(upstream(balanced).await).build();
    assert_eq!(seen(&up, "tenant").await.as_deref(), Some("acme"));

    // A value the nested call sets itself wins over the forwarded one.
    let server = Server::builder().build();
    let own = Client::builder(down).forward_metadata(["tenant"]).build();
    server
        .router()
        .add_method(
            "Up.Own",
            handler_fn(move |(): ()| {
                let own = own.clone();
                async move {
                    let opts = CallOptions::new().metadata("tenant", "mine");
                    Ok::<Option<String>, Status>(own.call_with("Echo.Seen", &"tenant", &opts).await?)
                }
            }),
        )
        .expect("register");
    let up = Client::builder(serve(server).await).build();
    let opts = CallOptions::new().metadata("tenant", "acme");
    let got: Option<String> = up.call_with("Up.Own", &(), &opts).await.expect("call");
    assert_eq!(got.as_deref(), Some("mine"));
}
