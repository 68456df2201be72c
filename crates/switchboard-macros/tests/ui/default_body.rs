// A service method has no default body: the implementation provides it.
#[switchboard::service]
pub trait Arith {
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status> {
        Ok(pair.0 + pair.1)
    }
}

fn main() {}
