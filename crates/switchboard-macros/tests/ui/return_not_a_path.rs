// A tuple is not a `Result`.
#[switchboard::service]
pub trait Arith {
    async fn divide(&self, pair: (i64, i64)) -> (i64, switchboard::Status);
}

fn main() {}
