// Only `&self`: a typed receiver is refused, even one that means the same.
#[switchboard::service]
pub trait Arith {
    async fn add(self: std::sync::Arc<Self>, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
