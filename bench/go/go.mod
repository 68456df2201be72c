module switchboard.invalid/bench/go

go 1.19
