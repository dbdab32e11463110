DROP TABLE budget_leases;
DROP TABLE budgets;
