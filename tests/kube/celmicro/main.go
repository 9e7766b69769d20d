package main

import (
	"fmt"
	"os"
	"time"

	"github.com/google/cel-go/cel"
	"k8s.io/apiserver/pkg/cel/environment"
)

func main() {
	base := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
	env, _ := base.Env(environment.StoredExpressions)
	env, _ = env.Extend(cel.Variable("s", cel.StringType))
	for _, e := range os.Args[1:] {
		ast, iss := env.Compile(e)
		if iss.Err() != nil {
			fmt.Println("compile:", iss.Err())
			continue
		}
		prg, _ := env.Program(ast, cel.EvalOptions(cel.OptOptimize, cel.OptTrackCost), cel.CostLimit(1000000000))
		act := map[string]any{"s": "registry-33.example.com/team/app-1:1"}
		n := 2000
		start := time.Now()
		var det *cel.EvalDetails
		var err error
		for i := 0; i < n; i++ {
			_, det, err = prg.Eval(act)
		}
		fmt.Printf("%8v cost %6d err %v  %s\n", time.Since(start)/time.Duration(n), *det.ActualCost(), err, e[:min(len(e), 90)])
	}
}
