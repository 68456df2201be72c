// Methods must be `async fn`.
#[switchboard::service]
pub trait Arith {
    fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
