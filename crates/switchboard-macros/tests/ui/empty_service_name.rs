// An empty service name could not be called.
#[switchboard::service(name = "")]
pub trait Arith {
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
