// The service name must be a string literal, not a path.
#[switchboard::service(name = Calculator)]
pub trait Arith {
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
