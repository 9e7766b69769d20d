// Temporary probe (not committed): evaluates detour policy variables with the
// apiserver's CEL environment and prints per-variable cost and time.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"k8s.io/apiserver/pkg/cel/environment"
)

func main() {
	var policy map[string]any
	data, _ := os.ReadFile(os.Args[1])
	json.Unmarshal(data, &policy)
	var pod map[string]any
	data, _ = os.ReadFile(os.Args[2])
	json.Unmarshal(data, &pod)
	base := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
	env, err := base.Env(environment.StoredExpressions)
	if err != nil {
		panic(err)
	}
	env, err = env.Extend(
		cel.Variable("object", cel.DynType),
		cel.Variable("oldObject", cel.DynType),
		cel.Variable("request", cel.DynType),
		cel.Variable("namespaceObject", cel.DynType),
	)
	if err != nil {
		panic(err)
	}
	vars := map[string]ref.Val{}
	spec := policy["spec"].(map[string]any)
	total := uint64(0)
	for _, v := range spec["variables"].([]any) {
		m := v.(map[string]any)
		name := m["name"].(string)
		ast, iss := env.Compile(strings.ReplaceAll(m["expression"].(string), "variables.", "v_"))
		if iss.Err() != nil {
			fmt.Println(name, "compile:", iss.Err())
			os.Exit(1)
		}
		prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize, cel.OptTrackCost), cel.CostLimit(1000000000))
		if err != nil {
			panic(err)
		}
		act := map[string]any{
			"object":    pod,
			"oldObject": nil,
			"request":   map[string]any{"operation": "CREATE"},
		}
		for k, v := range vars {
			act["v_"+k] = v
		}
		start := time.Now()
		n := 200
		var out ref.Val
		var det *cel.EvalDetails
		for i := 0; i < n; i++ {
			out, det, err = prg.Eval(act)
		}
		el := time.Since(start) / time.Duration(n)
		if err != nil {
			fmt.Println(name, "eval:", err)
			os.Exit(1)
		}
		cost := *det.ActualCost()
		total += cost
		fmt.Printf("%-14s cost %8d  time %v\n", name, cost, el)
		vars[name] = out
		env, _ = env.Extend(cel.Variable("v_"+name, ast.OutputType()))
		_ = types.True
	}
	fmt.Printf("total cost %d\n", total)
}
