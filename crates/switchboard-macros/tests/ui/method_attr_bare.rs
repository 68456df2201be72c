// `#[switchboard]` on a method needs its options in parentheses.
#[switchboard::service]
pub trait Arith {
    #[switchboard]
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
