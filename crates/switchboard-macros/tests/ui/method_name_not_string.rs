// The wire name of a method must be a string literal.
#[switchboard::service]
pub trait Arith {
    #[switchboard(name = Plus)]
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
