//go:build race

package slacksim_test

const raceEnabled = true
