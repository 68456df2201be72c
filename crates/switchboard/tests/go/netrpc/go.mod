module netrpcpeer

go 1.19
