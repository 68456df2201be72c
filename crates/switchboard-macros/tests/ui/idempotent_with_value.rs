// `idempotent` is a flag.
#[switchboard::service]
pub trait Arith {
    #[switchboard(idempotent = true)]
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
