package manager

func runManagerChild() int { return 2 }
