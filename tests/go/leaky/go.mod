module fdguard.test/leaky

go 1.19
