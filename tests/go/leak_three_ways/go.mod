module fdguard.test/leak_three_ways

go 1.19
