// The return type must be a `Result`.
#[switchboard::service]
pub trait Users {
    async fn find(&self, id: u64) -> Option<String>;
}

fn main() {}
