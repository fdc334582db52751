from planner.errors import (GGUFFormatError, InfeasibleBudgetError, OutputExistsError, PlannerError,
                            UnknownQuantTypeError, exit_code_for, format_error)


def test_unknown_quant_type_suggests_case_fix():
    e = UnknownQuantTypeError("q4_k", known=["q4_K", "q5_K", "q4_0"])
    assert e.close_matches[0] == "q4_K"
    assert "did you mean 'q4_K'" in str(e)
    assert exit_code_for(e) == 2


def test_gguf_error_names_offset_and_field():
    e = GGUFFormatError("string length 1152921504606846976 exceeds the file", offset=24, field="kv[0].key",
                        source="x.gguf")
    assert "offset 24" in str(e) and "kv[0].key" in str(e) and "x.gguf" in str(e)
    assert exit_code_for(e) == 4


def test_infeasible_lists_shortfall_and_options():
    e = InfeasibleBudgetError("does not fit", shortfall_bytes={"CPU": 3 << 30}, options=["--ram 40"])
    s = format_error(e)
    assert s.startswith("error: does not fit; CPU short by 3.00 GiB; nearest feasible: --ram 40")
    assert exit_code_for(e) == 2


def test_unexpected_exception_is_internal_error():
    assert exit_code_for(ZeroDivisionError()) == 70
    assert "GGUF_PLANNER_DEBUG=1" in format_error(ZeroDivisionError("x"))
    assert exit_code_for(OutputExistsError("f")) == 3
    assert exit_code_for(PlannerError("x")) == 1
