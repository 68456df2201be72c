// No parameters at all: `&self` is missing.
#[switchboard::service]
pub trait Info {
    async fn version() -> Result<String, switchboard::Status>;
}

fn main() {}
