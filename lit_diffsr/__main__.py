from lit_diffsr.cli import main

main()
