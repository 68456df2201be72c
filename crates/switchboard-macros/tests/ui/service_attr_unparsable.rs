// Arguments that are not `key = value` pairs at all.
#[switchboard::service("Calculator")]
pub trait Arith {
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
