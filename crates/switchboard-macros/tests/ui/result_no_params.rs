// `Result` without its parameters.
#[switchboard::service]
pub trait Arith {
    async fn add(&self, pair: (i64, i64)) -> Result;
}

fn main() {}
