// Handlers are shared between concurrent calls: `self` by value is not possible.
#[switchboard::service]
pub trait Arith {
    async fn add(self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
