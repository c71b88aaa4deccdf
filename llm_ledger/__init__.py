"""llm_ledger"""
