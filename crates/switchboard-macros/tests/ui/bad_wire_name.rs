// Callers name a method `Service.Method`, split at the last `.`: an empty
// method name, or one with a dot, could not be reached.
#[switchboard::service]
pub trait Arith {
    #[switchboard(name = "")]
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;

    #[switchboard(name = "Int.Sub")]
    async fn sub(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
