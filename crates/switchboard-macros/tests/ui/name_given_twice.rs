// Two names for the service, or for a method: which one was meant?
#[switchboard::service(name = "Calc", name = "Calculator")]
pub trait Arith {
    #[switchboard(name = "Plus")]
    #[switchboard(name = "Sum")]
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
