// An associated function without a receiver cannot be served.
#[switchboard::service]
pub trait Arith {
    async fn add(pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
