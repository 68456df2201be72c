// An option the service attribute does not know.
#[switchboard::service(version = "2")]
pub trait Arith {
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
