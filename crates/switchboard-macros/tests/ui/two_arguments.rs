// At most one argument besides `&self`.
#[switchboard::service]
pub trait Arith {
    async fn add(&self, a: i64, b: i64) -> Result<i64, switchboard::Status>;
}

fn main() {}
