from .curves import plot_accuracy, plot_losses
from .logs import best_metrics, final_metrics, read_scalars

__all__ = ['plot_accuracy', 'plot_losses', 'best_metrics', 'final_metrics', 'read_scalars']
