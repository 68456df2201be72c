// One build reports every problem: the service option, and each method's.
#[switchboard::service(version = "2")]
pub trait Arith {
    fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;

    const LIMIT: i64;

    async fn sub(&self, a: i64, b: i64) -> Result<i64, switchboard::Status>;

    async fn neg(&mut self, a: i64) -> Result<i64, switchboard::Status> {
        Ok(-a)
    }
}

// Nor does the missing trait or server add errors of its own.
struct Calc;

impl Arith for Calc {
    fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status> {
        Ok(pair.0 + pair.1)
    }
}

fn main() {
    let _ = ArithServer::new(Calc);
}
