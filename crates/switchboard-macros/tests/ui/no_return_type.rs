// Without a return type the caller could not learn of a failure.
#[switchboard::service]
pub trait Log {
    async fn write(&self, line: String);
}

fn main() {}
