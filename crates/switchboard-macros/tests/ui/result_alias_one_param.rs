// A one-parameter `Result` alias: the macro sees only tokens, so it cannot
// find the error type behind the alias.
type Result<T> = std::result::Result<T, switchboard::Status>;

#[switchboard::service]
pub trait Arith {
    async fn add(&self, pair: (i64, i64)) -> Result<i64>;
}

fn main() {}
