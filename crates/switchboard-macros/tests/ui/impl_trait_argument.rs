// `impl Trait` is a generic in disguise: the server could not decode it.
#[switchboard::service]
pub trait Arith {
    async fn add(&self, pair: impl Into<i64>) -> Result<i64, switchboard::Status>;
}

fn main() {}
