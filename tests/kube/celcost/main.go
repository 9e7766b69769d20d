// Measures detour's native-mode policy in the apiserver's own CEL
// environment (k8s.io/apiserver's base environment, with the program
// options and cost tracking the apiserver uses): for each variable of a
// MutatingAdmissionPolicy, in order, its runtime cost and mean time over
// 200 evaluations against one Pod. With -e, times single expressions over a
// string variable `s` instead (to price CEL's building blocks).
//
//	celcost POLICY.json POD.json
//	celcost -e 'lists.range(60).map(i, s.indexOf("/"))' ...
//
// Run by bench/cel-cost.sh. Not a test: nothing here is detour's runtime.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types/ref"
	"k8s.io/apiserver/pkg/cel/environment"
)

const rounds = 200

func baseEnv() *cel.Env {
	env, err := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()).Env(environment.StoredExpressions)
	if err != nil {
		panic(err)
	}
	return env
}

func program(env *cel.Env, expression string) (*cel.Ast, cel.Program, error) {
	ast, iss := env.Compile(expression)
	if iss.Err() != nil {
		return nil, nil, iss.Err()
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize, cel.OptTrackCost), cel.CostLimit(1_000_000_000))
	return ast, prg, err
}

func timed(prg cel.Program, act map[string]any) (ref.Val, uint64, time.Duration, error) {
	var out ref.Val
	var det *cel.EvalDetails
	var err error
	start := time.Now()
	for i := 0; i < rounds; i++ {
		out, det, err = prg.Eval(act)
	}
	return out, *det.ActualCost(), time.Since(start) / rounds, err
}

func expressions(list []string) {
	env, err := baseEnv().Extend(cel.Variable("s", cel.StringType))
	if err != nil {
		panic(err)
	}
	for _, e := range list {
		_, prg, err := program(env, e)
		if err != nil {
			fmt.Printf("%s: %v\n", e, err)
			continue
		}
		_, cost, took, err := timed(prg, map[string]any{"s": "registry-33.example.com/team/app-1:1"})
		fmt.Printf("%10v  cost %7d  %v  %s\n", took, cost, err, e)
	}
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-e" {
		expressions(os.Args[2:])
		return
	}
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: celcost POLICY.json POD.json | celcost -e EXPRESSION...")
		os.Exit(2)
	}
	var policy struct {
		Spec struct {
			Variables []struct{ Name, Expression string }
		}
	}
	var pod map[string]any
	for path, into := range map[string]any{os.Args[1]: &policy, os.Args[2]: &pod} {
		data, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(data, into)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(2)
		}
	}
	// The apiserver declares `variables` as an object typed by each
	// variable's output; here each variable becomes a top-level identifier
	// `v_NAME` of its compiled type, which checks and evaluates the same.
	env, err := baseEnv().Extend(
		cel.Variable("object", cel.DynType),
		cel.Variable("oldObject", cel.DynType),
		cel.Variable("request", cel.DynType),
		cel.Variable("namespaceObject", cel.DynType),
	)
	if err != nil {
		panic(err)
	}
	act := map[string]any{
		"object":    pod,
		"oldObject": nil,
		"request":   map[string]any{"operation": "CREATE"},
	}
	var total uint64
	var totalTime time.Duration
	for _, v := range policy.Spec.Variables {
		ast, prg, err := program(env, strings.ReplaceAll(v.Expression, "variables.", "v_"))
		if err != nil {
			fmt.Printf("%s: %v\n", v.Name, err)
			os.Exit(1)
		}
		out, cost, took, err := timed(prg, act)
		if err != nil {
			fmt.Printf("%s: %v\n", v.Name, err)
			os.Exit(1)
		}
		total += cost
		totalTime += took
		fmt.Printf("%-20s cost %8d  time %v\n", v.Name, cost, took)
		act["v_"+v.Name] = out
		if env, err = env.Extend(cel.Variable("v_"+v.Name, ast.OutputType())); err != nil {
			panic(err)
		}
	}
	fmt.Printf("%-20s cost %8d  time %v\n", "all variables", total, totalTime)
}
