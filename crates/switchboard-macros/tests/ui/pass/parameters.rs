// Parameter and method names that the generated code must not trip over: a
// `_` parameter, parameters named like the client's own locals, a raw
// identifier as a method name.
use serde::{Deserialize, Serialize};
use switchboard::{Client, Service, Status};

#[derive(Serialize, Deserialize)]
pub struct Options {
    pub verbose: bool,
}

#[switchboard::service]
pub trait Log {
    async fn write(&self, _: String) -> Result<(), Status>;

    async fn configure(&self, opts: Options) -> Result<(), Status>;

    #[switchboard(idempotent)]
    async fn mark(&self, marked: u64) -> Result<u64, Status>;

    async fn r#type(&self) -> Result<String, Status>;
}

struct Logger;

impl Log for Logger {
    async fn write(&self, _: String) -> Result<(), Status> {
        Ok(())
    }

    async fn configure(&self, _opts: Options) -> Result<(), Status> {
        Ok(())
    }

    async fn mark(&self, marked: u64) -> Result<u64, Status> {
        Ok(marked)
    }

    async fn r#type(&self) -> Result<String, Status> {
        Ok("log".into())
    }
}

// The client's methods take the arguments by these types.
#[allow(dead_code)]
async fn calls(client: LogClient<Client>) -> Result<(), switchboard::Error> {
    client.write(String::from("line")).await?;
    client.configure(Options { verbose: true }).await?;
    let _: u64 = client.mark(7).await?;
    let _: String = client.r#type().await?;
    Ok(())
}

fn main() {
    let server = LogServer::new(Logger);
    assert_eq!(server.methods(), ["Write", "Configure", "Mark", "Type"]);
}
